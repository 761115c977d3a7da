"""The `eagle-hf demo` command line: options here (no heavy imports), the run in `run.py`."""

DEFAULT_OUT = "eagle-hf-demo"
DEFAULT_THREADS = 2  # measured faster than 1 on a 2-core machine; fewer when fewer cores exist


def add_demo_arguments(parser):
    """The options of `eagle-hf demo`; returns `parser`."""
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: ./{DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run (well under 2 minutes) that checks the whole pipeline, not the accuracy")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the weights and the data order")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"CPU threads for torch (default: {DEFAULT_THREADS}, or fewer when fewer cores exist)")
    return parser


def run_demo(args):
    """Run the demo (see `eagle_hf.demo.run.run_demo`); returns the exit status."""
    import os

    from .run import run_demo as run

    if args.threads is None:
        args.threads = min(DEFAULT_THREADS, os.cpu_count() or 1)
    return run(args)
