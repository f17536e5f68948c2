# make run   : set up .venv and launch the app
# make test  : set up .venv (+ Xvfb/Mesa) and run the whole test suite
# make bench : run the benchmarks
# make gifs  : render the README's GIFs from assets/scenes
.PHONY: run test bench lint setup gifs

setup:
	@scripts/setup.sh app

run:
	@scripts/setup.sh app
	.venv/bin/losslab $(ARGS)

test:
	@scripts/setup.sh test
	.venv/bin/python -m pytest -q $(ARGS)

bench:
	@scripts/setup.sh test
	xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/losslab bench $(ARGS)

lint:
	@scripts/setup.sh test
	.venv/bin/ruff check models visualizer tests

gifs:
	@scripts/setup.sh test
	scripts/make_gifs.sh $(ARGS)
