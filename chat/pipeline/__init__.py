"""The chat pipeline: one async service behind both doors (the browser's WebSocket and the OpenAI-compatible API).

    1 authorize   tenant active, role, model/adapter and knowledge-base access, one generation per conversation;
                  a client's earlier turns are trimmed to a character budget (``stages.history_guard``)
    2 quota       reserve an upper bound of the request's tokens (atomic), requests per minute
    3 input_guard guardrails.inspect_input on the question and on every client-supplied earlier turn
    4 mask        guardrails.mask: PII → placeholders, kept in the conversation's (or a server-made per-request) vault
    5 retrieve    knowledge.chunk_search; chunks inspected (indirect injection) and masked too
    6 prompt      tenant system prompt + canary, numbered context [1]..[n] quoted as untrusted data, fitted history
    7 stream      the model turn (``adapters.model_turn``) on the pool passed in; tokens unmasked for display
    8 output_guard guardrails.inspect_output: PII leakage, canary, unsafe markdown, groundedness
    9 persist     the answer with citations, TTFT/TPOT, backend, adapter, verdicts and stage timings
   10 settle      the real token counts (UsageRecord with cost), metrics and an audit event

Modules: ``events`` (the input and the events), ``state`` (``Plan``, ``Masked``, ``Prompt`` and the run's
``RunState``), ``stages`` (one function per blocking stage), ``run`` (``ChatRun``: the stream around them).

Use: ``run = ChatRun(ChatInput(...), pool=...)`` then ``async for event in run.stream(): ...``. Events: ``Started``,
``Citations``, ``Token``, then ``Done`` or ``Failed``. Errors before the first event (quota, guard block, busy pool,
unknown model...) are raised as ``core.errors.*`` (with ``details["param"]`` naming the field at fault where there is
one) so that each door answers them its own way. Cancelling the consuming task (stop, disconnect) keeps the partial
answer as ``stopped`` and settles usage; ``run`` then still tells what happened (``run.status``, ``run.message_id``).

Raw PII never reaches the engine, logs, metrics or usage records: the engine sees masked text only, metrics carry
stage names and counts, usage records hold token counts.
"""

from adapters.model_turn import bytes_upper_bound, token_estimate
from chat.pipeline.events import ChatInput, Citations, Done, Failed, PipelineEvent, Started, Token, Usage
from chat.pipeline.run import ChatRun, chat_stream, finishes_pending, finishes_wait
from chat.pipeline.text import StreamUnmasker, build_context_block

__all__ = [
    "ChatInput",
    "ChatRun",
    "Citations",
    "Done",
    "Failed",
    "PipelineEvent",
    "Started",
    "StreamUnmasker",
    "Token",
    "Usage",
    "build_context_block",
    "bytes_upper_bound",
    "chat_stream",
    "finishes_pending",
    "finishes_wait",
    "token_estimate",
]
