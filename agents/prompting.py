"""The model turn's prompt: the run's history rendered as messages and fitted to the engine's window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.model_turn import bytes_upper_bound, token_estimate
from agents.models import AgentRun, AgentStep, StepKind
from agents.tools import TOOLS
from tenants.models import role_at_least

PROMPT_RESULT_CHARS = 1_500  # a tool result as the model sees it at most
OLD_RESULT_CHARS = 300  # older results when the prompt must shrink to fit the window


@dataclass
class TurnPrompt:
    messages: list[dict[str, str]]
    bound: int  # an upper bound of its tokens
    count: int  # messages that come from the run's history (before retry corrections)
    trimmed: bool = False  # older history was shortened or left out to fit the window


def available_tools(run: AgentRun, role: str) -> list[Any]:

    tools = []
    for name in run.definition.tools or []:
        tool = TOOLS.get(name)
        if tool is not None and role_at_least(role, tool.min_role) and tool.available(run.tenant):
            tools.append(tool)
    return tools


def prompt_steps(run: AgentRun) -> list[AgentStep]:
    return list(
        AgentStep.objects.for_tenant(run.tenant_id)
        .filter(run=run, kind__in=[StepKind.THOUGHT, StepKind.TOOL_RESULT])
        .order_by("ordinal")
    )


def render_prompt(run: AgentRun, *, system: str, steps: list[AgentStep], result_chars: int) -> list[dict[str, str]]:
    definition = run.definition
    steps_left = definition.max_steps - run.steps_used
    messages = [{"role": "system", "content": system}, {"role": "user", "content": f"Task: {run.input_masked}"}]
    results = [s for s in steps if s.kind == StepKind.TOOL_RESULT]
    last_result = results[-1].pk if results else None
    for step in steps:
        if step.kind == StepKind.THOUGHT:
            messages.append({"role": "assistant", "content": str(step.payload.get("raw", ""))})
        else:
            limit = result_chars if step.pk == last_result else min(result_chars, OLD_RESULT_CHARS)
            text = str(step.payload.get("text", ""))
            if len(text) > limit:
                text = text[:limit] + " …(cut)"
            messages.append({"role": "user", "content": f"Result of {step.tool} (untrusted data):\n{text}"})
    note = f"\n\n(Step {run.steps_used + 1} of {definition.max_steps}; {steps_left - 1} left after this one.)"
    messages[-1] = {**messages[-1], "content": messages[-1]["content"] + note}
    return messages


def build_prompt(
    run: AgentRun, *, system: str, steps: list[AgentStep], context: int, reserve_out: int, result_chars: int
) -> TurnPrompt:
    """The turn's messages, fitted to the engine's window: first the newest result is shortened, then the oldest
    exchanges (a thought and its result) are left out."""

    def size(messages: list[dict[str, str]]) -> int:
        return sum(token_estimate(m["content"]) + 4 for m in messages) + reserve_out

    trimmed = False
    messages = render_prompt(run, system=system, steps=steps, result_chars=result_chars)
    while size(messages) > context:
        if result_chars > OLD_RESULT_CHARS:
            result_chars = OLD_RESULT_CHARS
        elif len(steps) >= 2:
            steps = steps[2:]
        else:
            break  # the engine refuses what still does not fit, with a message the run reports
        trimmed = True
        messages = render_prompt(run, system=system, steps=steps, result_chars=result_chars)
    return TurnPrompt(messages=messages, bound=bytes_upper_bound(messages), count=len(messages), trimmed=trimmed)


def prompt_bound(prompt: TurnPrompt, last: AgentStep | None) -> int:
    """A tighter upper bound when the previous turn's real prompt size is known: its tokens plus the bytes of
    what was appended since (the history only grows or shrinks; it never rewrites)."""
    if last is None or prompt.trimmed or last.payload.get("prompt_trimmed"):
        return prompt.bound
    known = int(last.payload.get("prompt_tokens") or 0)
    previous_count = int(last.payload.get("prompt_messages") or 0)
    if known <= 0 or previous_count <= 1 or previous_count > len(prompt.messages):
        return prompt.bound
    tail = prompt.messages[previous_count - 1 :]  # the last shared message changed (its note moved)
    return min(prompt.bound, known + bytes_upper_bound(tail) + 32)
