# Two commands for a newcomer: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: run test ui lint bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	$(VENV)/bin/recsys run

# A second Django (4.2 LTS) beside the venv's 5.2, for the test that checks the README's
# unmanaged model on it; importable only through PYTHONPATH, by that test's subprocess.
DJANGO42 := $(VENV)/django-4.2/.installed
$(DJANGO42): $(STAMP)
	$(VENV)/bin/python -m pip install --quiet --upgrade --target $(VENV)/django-4.2 'Django==4.2.30'
	touch $@

test: $(STAMP) $(DJANGO42)
	# pytest exits 5 when it collected no tests: that is a failure, not a pass.
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo 'pytest collected no tests' >&2; exit 1; fi; exit $$rc

ui: $(STAMP)
	$(VENV)/bin/recsys ui

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf .recsys
