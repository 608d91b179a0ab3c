"""lm-eval's own command line, with the hgrn adapter registered:

    python -m hgrn.eval.lm_eval run --model hgrn --model_args pretrained=<run>/checkpoints/best.ckpt \
        --include_path tasks/lm_eval --tasks piqa,arc_easy --limit 100

Everything after the module name is lm-eval's (`python -m hgrn.eval.lm_eval run --help`); this module only imports
the adapter first. The bare `lm_eval` command cannot see a model defined outside lm-eval in 0.4.13: `--model` is
looked up in lm-eval's registry, which holds its built-in table (lm_eval/models/__init__.py) plus whatever modules
called @register_model before the lookup; lm-eval reads no plugin entry points, and `--include_path` only indexes
task YAMLs (their Python helpers are imported after the model is built).
"""

from __future__ import annotations

from lm_eval.__main__ import cli_evaluate

import hgrn.eval.harness  # noqa: F401  (registers the "hgrn" model)


def main() -> None:
    cli_evaluate()


if __name__ == "__main__":
    main()
