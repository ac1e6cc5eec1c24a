# The two commands of the README's Quickstart:
#   make lab    set up .venv (once) and open JupyterLab on the course
#   make test   set up .venv (once) and run the unit tests and every notebook (nbval)
#   make site   build the offline course website into build/site (stored outputs, nothing executed)
#   make demo   serve the classroom demo page (the widget demos, no code) with Voila on 127.0.0.1
# Both are idempotent: the virtual environment is built once and reused.
# A torch already installed in .venv is kept (pyproject asks only for torch>=2.2).

PYTHON ?= python3
# Idle OpenMP threads sleep instead of spinning: on a small, busy CPU spinning threads
# made torch 2-7x slower (measured on 2 cores); on an idle machine it costs nothing.
export OMP_WAIT_POLICY ?= PASSIVE
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.tinydiff-installed

.PHONY: lab test unit notebooks test-threads test-device execute site demo clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[course,test,site]"
	touch $(STAMP)

# Jupyter refuses to run as root (containers, cloud shells) unless told to.
ROOT_FLAG := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(ROOT_FLAG)

# make test runs in JOBS processes (pytest-xdist), one thread each: the files are shared out whole (--dist loadfile),
# so a notebook's cells run in order in one kernel. Printed numbers do not depend on the thread count (test-threads).
# The student versions are not run whole here: they are their sources cell for cell (nbval runs those) but for the
# exercise stubs, which tests/test_student_notebooks.py runs on their own; make notebooks runs them whole.
JOBS ?= 2
test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile tests notebooks --ignore=notebooks/student --nbval --nbval-current-env --nbval-sanitize-with .ci/nbval_sanitize.cfg -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest tests

notebooks: $(STAMP)
	$(BIN)/python -m pytest notebooks --nbval --nbval-current-env --nbval-sanitize-with .ci/nbval_sanitize.cfg -p no:cacheprovider

# nbval twice, with 1 and with 2 threads (torch and BLAS): a printed number that changes
# between the two is round-off, not mathematics, and must not be in a compared output.
test-threads: $(STAMP)
	for n in 1 2; do \
		echo "== nbval with $$n thread(s)"; \
		OMP_NUM_THREADS=$$n MKL_NUM_THREADS=$$n OPENBLAS_NUM_THREADS=$$n \
		$(BIN)/python -m pytest notebooks --nbval --nbval-current-env --nbval-sanitize-with .ci/nbval_sanitize.cfg -p no:cacheprovider || exit 1; \
	done

# The device tests on an accelerator: every sampler, flow matching, the ODE likelihood, toy data and the caption
# measures run on DEVICE with a generator on the CPU and on DEVICE. DEVICE=cpu (the default) is part of make test.
DEVICE ?= cpu
test-device: $(STAMP)
	TINYDIFF_TEST_DEVICE=$(DEVICE) $(BIN)/python -m pytest tests/test_device.py -p no:cacheprovider

# Re-execute every notebook in place (stores fresh outputs for nbval to compare).
execute: $(STAMP)
	for nb in notebooks/*.ipynb; do \
		$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=600 "$$nb" || exit 1; \
	done

site: $(STAMP)
	$(BIN)/python scripts/build_site.py

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

clean-venv:
	rm -rf $(VENV)
