# Two commands a new user needs: `make demo` and `make test`. Both set up .venv themselves.
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: demo test setup bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh $(VENV)

demo: $(STAMP)
	$(VENV)/bin/diffpir demo

test: $(STAMP)
	bash scripts/run_tests.sh $(VENV)

bench: $(STAMP)
	$(VENV)/bin/python bench/unet_forward.py
	$(VENV)/bin/python -m bench.sampler
	$(VENV)/bin/python bench/io.py
	$(VENV)/bin/python bench/pipeline.py
	$(VENV)/bin/python bench/quality.py

stack: $(STAMP)
	VENV=$(VENV) bash scripts/stack.sh up

clean-venv:
	rm -rf $(VENV)
