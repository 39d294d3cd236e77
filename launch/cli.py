"""The `graft` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_pipeline.errors import UserError
from pretrain.failures import CRASH_EXIT_CODE, USER_ERROR_EXIT_CODE, RunFailed, crash_message, report



def _prepare(args) -> None:
    from data_pipeline.prepare import prepare

    summary = prepare(args.inputs, Path(args.out), vocab_size=args.vocab_size,
                      tokenizer=args.tokenizer, text_field=args.text_field,
                      shard_tokens=args.shard_tokens, tokenizer_kind=args.tokenizer_kind, txt_mode=args.txt_docs,
                      skip_bad=args.skip_bad, max_doc_bytes=int(args.max_doc_mb * 2**20),
                      pair_fields=args.pair_fields, language_fields=args.language_fields,
                      language_field=args.language_field)
    skipped = ", ".join(f"{n:,} {reason}" for reason, n in summary.skipped.items()) or "none"
    print(f"prepared {args.out}: {summary.records_read:,} records read, {summary.documents:,} documents kept "
          f"({summary.tokens:,} tokens in {summary.shards} shard(s), vocabulary {summary.vocab_size:,}); "
          f"skipped: {skipped}. Details in {Path(args.out) / 'summary.json'}")


def _train(args) -> None:
    from launch.local import launch_training
    from pretrain.signals import REQUEUE_EXIT_CODE

    run_dir, stopped_by = launch_training(args.config, args.overrides, nproc=args.nproc, resume=args.resume)
    print(f"run directory: {run_dir} (config.yaml, deepspeed.json, metrics.jsonl, summary.json, tensorboard/, "
          "checkpoints/)")
    if stopped_by.startswith("signal"):
        print(f"stopped by {stopped_by[len('signal '):]} after a complete checkpoint; continue with the same "
              f"command plus --resume (exit code {REQUEUE_EXIT_CODE} asks the scheduler to requeue)")
        sys.exit(REQUEUE_EXIT_CODE)
    if stopped_by == "hang":
        print(f"no step completed within train.hang_timeout_minutes; each rank's Python stack is in {run_dir}/hang/; "
              f"continue with the same command plus --resume (exit code {REQUEUE_EXIT_CODE})")
        sys.exit(REQUEUE_EXIT_CODE)


def _eval(args) -> None:
    from pretrain.long_eval import PLOT_FILE, RESULT_FILE, evaluate_long, write_report

    run_dir = Path(args.run_dir)
    report = evaluate_long(run_dir, Path(args.data), args.mem_len, args.segments, args.max_documents)
    out = Path(args.out or run_dir / "eval")
    write_report(report, out)
    for name in ("with_memory", "without_memory"):
        print(f"{name:15s} " + " ".join(f"{v:.3f}" for v in report[name]))
    print(f"wrote {out / RESULT_FILE} and {out / PLOT_FILE}")


def _export(args) -> None:
    from pretrain.export import export

    result = export(Path(args.run_dir), Path(args.out_dir), step=args.step)
    print(f"exported {result.checkpoint} to {result.out_dir} as {' + '.join(result.architectures)}; transformers "
          f"reloads it with logits within {result.max_abs_diff:.2e} of Graft's (max abs difference)")


def _import(args) -> None:
    from pretrain.import_hf import import_hf

    result = import_hf(Path(args.hf_dir), Path(args.config))
    print(f"imported {args.hf_dir} as model.family={result.model.family} (objective {result.objective}) into "
          f"{result.config_path}")
    if result.fresh:
        print(f"note: the checkpoint has no pretraining head; these {len(result.fresh)} tensors start fresh: "
              + ", ".join(result.fresh))
    print(f"next: graft prepare INPUT --tokenizer {args.hf_dir} --out DATA, then graft train {result.config_path} "
          "data.path=DATA train.run_dir=RUN")


def _config_keys(args) -> None:
    from pretrain.config_reference import config_keys, keys_markdown, keys_text

    keys = config_keys(args.prefix)
    if not keys:
        raise UserError(f"no config key starts with {args.prefix!r}; `graft config keys` lists them all")
    print(keys_markdown(keys) if args.markdown else keys_text(keys), end="")


def _config_show(args) -> None:
    from pretrain.config import show_config

    text, missing = show_config(args.config, args.overrides)
    print(text, end="")
    if missing:
        print(f"note: required keys not set yet: {', '.join(missing)} (graft train needs them, e.g. "
              f"{missing[0]}=VALUE)", file=sys.stderr)


def _quickstart(args) -> None:
    from launch.quickstart import quickstart

    quickstart(Path(args.out), nproc=args.nproc, overrides=args.overrides)


def _sweep(args) -> None:
    from launch.sweep import run_sweep
    from launch.sweep_plan import grid_points, isoflop_points, parse_budgets

    if bool(args.isoflop) != bool(args.sizes):
        raise UserError("--isoflop and --sizes go together: budgets x size presets (e.g. --isoflop 1e15,1e16 "
                        "--sizes bert-1m,bert-3m,bert-10m)")
    points = grid_points(args.grid) if args.grid else []
    if args.isoflop:
        if points:
            raise UserError("give either --grid or --isoflop/--sizes, not both")
        points = isoflop_points(parse_budgets(args.isoflop), args.sizes.split(","))
    out = Path(args.out)
    outcome = run_sweep(args.config, args.overrides, points, out, backend=args.backend, nproc=args.nproc)
    if args.backend == "local":
        counts = {k: sum(v == k for v in outcome.values()) for k in ("finished", "trained", "resumed")}
        print(f"sweep done: {counts['trained']} trained, {counts['resumed']} resumed, {counts['finished']} already "
              f"finished. Fit it with: graft scaling {out} --out {out / 'scaling'}")


def _scaling(args) -> None:
    from launch.scaling import scaling

    scaling(args.inputs, Path(args.out), budget=args.budget, draws=args.draws, level=args.level,
            params=args.params, seed=args.seed)


def _objectives(args) -> None:
    from pretrain.objectives import OBJECTIVES, trained_families

    rows = [(o.name, ", ".join(trained_families(o)), o.data, o.description) for o in OBJECTIVES.values()]
    widths = [max(len(r[i]) for r in rows + [("objective", "families", "data", "")]) for i in range(3)]
    for row in [("objective", "families", "data", "description"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    print("select one with objective.name=NAME (presets: configs/objectives/); its options are objective.BLOCK.*")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graft",
        description="Pretrain encoder and encoder-decoder language models: prepare -> train -> export.",
        epilog="Each command has its own --help. Docs: README.md.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # Light modules only: every `graft` command, `--help` too, builds this parser (tests/launch/test_cli_imports.py).
    from data_pipeline.documents import DEFAULT_MAX_DOC_BYTES, TXT_MODES
    from data_pipeline.prepare_options import DEFAULT_SHARD_TOKENS, TOKENIZER_KIND_NAMES

    p = commands.add_parser(
        "prepare", help="tokenize raw text into shards",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Read documents (.jsonl, .txt, .parquet, .csv, or a directory written by datasets' "
                    "save_to_disk; globs allowed), train a tokenizer on them (or load one), and write token "
                    "shards with a checksummed manifest.json and a summary.json of what was read, kept and "
                    "skipped.",
        epilog="Re-running an interrupted prepare with the same arguments continues where it stopped; re-running "
               "a finished one changes nothing.\n"
               "Bad records (invalid UTF-8, malformed JSON, a missing text field, binary data, documents over "
               "--max-doc-mb) stop\nthe run with an error naming file and line, unless --skip-bad skips and "
               "counts them. Empty documents are always skipped.\n\n"
               "example: graft prepare 'corpus/*.jsonl' --out data/corpus --vocab-size 32000")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files or quoted globs: .jsonl (one JSON object per line), .txt, .parquet, .csv; or a "
                        "saved datasets directory")
    p.add_argument("--out", required=True, help="dataset directory to create (or to finish, after an interruption)")
    p.add_argument("--tokenizer-kind", choices=sorted(TOKENIZER_KIND_NAMES), default="wordpiece",
                   help="kind of tokenizer to train (default: %(default)s)")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary to train (default: %(default)s)")
    p.add_argument("--tokenizer", help="use this tokenizer.json (or HF tokenizer directory), a path or a URL, instead "
                                       "of training one")
    p.add_argument("--text-field", default="text", help="the JSON field or column holding the text (default: text)")
    p.add_argument("--txt-docs", choices=TXT_MODES, default="paragraph",
                   help=".txt documents: 'paragraph' = separated by blank lines, 'line' = one per line "
                        "(default: %(default)s)")
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS,
                   help=f"tokens per shard (default: {DEFAULT_SHARD_TOKENS:,})")
    p.add_argument("--skip-bad", action="store_true", help="skip bad records and count them by reason instead of "
                                                           "stopping at the first")
    p.add_argument("--max-doc-mb", type=float, default=DEFAULT_MAX_DOC_BYTES / 2**20,
                   help="largest document accepted, in MiB (default: %(default)g)")
    p.add_argument("--pair-fields", nargs=2, metavar=("FIELD_A", "FIELD_B"),
                   help="parallel text (TLM): the two JSON fields holding a record's sides, e.g. --pair-fields en fr")
    p.add_argument("--language-fields", nargs=2, metavar=("LANG_A", "LANG_B"),
                   help="parallel text: the two JSON fields holding each side's language code, e.g. "
                        "--language-fields lang_a lang_b")
    p.add_argument("--language-field", metavar="LANG",
                   help="monolingual text of several languages (multilingual MLM): the JSON field holding each "
                        "record's language code, e.g. --language-field lang")
    p.set_defaults(run=_prepare)

    p = commands.add_parser(
        "train", help="train a model from a config", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train with DeepSpeed ZeRO (stages 0-3) through Accelerate. CONFIG is a YAML preset (see "
                    "configs/);\nkey=value overrides follow it, e.g. train.max_steps=100 engine.zero_stage=3.",
        epilog="The run directory (train.run_dir) receives config.yaml, deepspeed.json, metrics.jsonl, tensorboard/,\n"
               "summary.json and checkpoints/ (a checkpoint every train.save_every steps and every\n"
               "train.save_every_minutes; `latest` names the newest complete one).\n\n"
               "--resume continues from checkpoints/latest, also at another --nproc (same global batch).\n"
               "SIGTERM or SIGUSR1 (SLURM's preemption warning): checkpoint at the next step, then exit with code\n"
               "75 so the job can be requeued. Exit code 2: a problem with the config or input, printed above.")
    p.add_argument("config", metavar="CONFIG", help="YAML config, e.g. configs/quickstart.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides in dotted form")
    p.add_argument("--nproc", type=int, default=1, help="processes on this machine, via torchrun (default: 1)")
    p.add_argument("--resume", action="store_true", help="continue the run in train.run_dir from its latest checkpoint")
    p.set_defaults(run=_train)

    p = commands.add_parser(
        "eval", help="held-out loss over long documents, with and without Transformer-XL memory",
        description="Read each long held-out document segment by segment (data.seq_len), once carrying the "
                    "memory and once without, and report the loss per segment index: how the memory helps with "
                    "distance into a document. Encoders: MLM loss (15% masked); T5 and BART: the run's span "
                    "corruption or text infilling loss. Writes JSON and a PNG plot.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run with relative positions (model.positions=xl, or T5)")
    p.add_argument("--data", required=True, help="a `graft prepare` directory of held-out long documents "
                                                 "(prepared with the run's tokenizer)")
    p.add_argument("--mem-len", type=int, help="memory length to evaluate with (default: the run's)")
    p.add_argument("--segments", type=int, default=8, help="segments read per document (default: %(default)s)")
    p.add_argument("--max-documents", type=int, default=64, help="documents read (default: %(default)s)")
    p.add_argument("--out", help="output directory (default: RUN_DIR/eval)")
    p.set_defaults(run=_eval)

    p = commands.add_parser("export", help="convert a run to a Hugging Face model directory",
                            description="Stream the latest checkpoint of RUN_DIR (or that of --step; any ZeRO stage, "
                                        "any number of ranks; optimizer state is never loaded) into safetensors for "
                                        "the family's "
                                        "transformers class (BertForMaskedLM or BertForPreTraining, "
                                        "RobertaForMaskedLM, AlbertForMaskedLM or AlbertForPreTraining, "
                                        "ElectraForPreTraining + ElectraForMaskedLM in OUT_DIR/generator, "
                                        "T5ForConditionalGeneration, BartForConditionalGeneration) with config.json, "
                                        "tokenizer, generation config and model card; then reload it with "
                                        "transformers and check its logits against Graft's.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR", help="must not exist yet (or be empty)")
    p.add_argument("--step", type=int, help="export the checkpoint of this step (default: checkpoints/latest)")
    p.set_defaults(run=_export)

    p = commands.add_parser("import", help="start a run from a Hugging Face checkpoint (continued pretraining)",
                            description="Read HF_DIR (a transformers BERT, RoBERTa, ALBERT, ELECTRA, T5 v1.1 or BART "
                                        "checkpoint, with or without its pretraining head) and write a run config "
                                        "whose model starts from its weights (model.init_from), with the family's "
                                        "native objective. A missing head starts fresh, and the import lists it.")
    p.add_argument("hf_dir", metavar="HF_DIR", help="a directory with config.json and model weights")
    p.add_argument("--config", required=True, help="the run config YAML to write, e.g. configs/continued.yaml")
    p.set_defaults(run=_import)

    p = commands.add_parser("config", help="the config reference, and a config as it resolves",
                            description="Inspect configs without starting anything.")
    config_commands = p.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    q = config_commands.add_parser(
        "keys", help="every config key with its type, default and meaning",
        description="List every config key (type, default, meaning), read from the config dataclasses.",
        epilog="example: graft config keys engine.   |   regenerate the docs: graft config keys --markdown > "
               "docs/config.md")
    q.add_argument("prefix", nargs="?", default="", metavar="PREFIX", help="only keys starting with this, e.g. train.")
    q.add_argument("--markdown", action="store_true", help="print docs/config.md (tables per section) instead")
    q.set_defaults(run=_config_keys)
    q = config_commands.add_parser(
        "show", help="print a config resolved with its overrides",
        description="Print CONFIG (a YAML file, or a preset name such as quickstart or models/t5-base) merged over "
                    "the defaults with the overrides, as graft train would run it; unknown keys and bad values "
                    "are errors. Starts nothing, writes nothing.",
        epilog="example: graft config show configs/quickstart.yaml engine.zero_stage=3")
    q.add_argument("config", metavar="CONFIG")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides in dotted form")
    q.set_defaults(run=_config_show)

    p = commands.add_parser("quickstart", help="the whole pipeline on the bundled sample corpus",
                            description="prepare the bundled Python-docs corpus, train a small BERT with dynamic "
                                        "MLM on 2 CPU processes under ZeRO-2, export it, and fill in masked "
                                        "sentences with transformers.pipeline('fill-mask').")
    p.add_argument("--out", default="runs/quickstart", help="directory for data, run and export (default: %(default)s)")
    p.add_argument("--nproc", type=int, default=2, help="training processes (default: 2)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides for configs/quickstart.yaml")
    p.set_defaults(run=_quickstart)

    p = commands.add_parser(
        "sweep", help="train a grid of runs, or IsoFLOP budgets x model sizes",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one run per point in SWEEP_DIR/runs/NAME, with SWEEP_DIR/sweep.json recording the "
                    "points.\n--grid: the product of the values of each key. --isoflop/--sizes: every size preset "
                    "(configs/scaling/) at\nevery budget, its train.max_steps chosen so that it spends the budget by "
                    "Graft's FLOPs count\n(pretrain/flops.py, on the objective's real batches). CONFIG must set "
                    "train.eval_data: the fits use\nthe final held-out loss.",
        epilog="Re-running the same command skips finished points and resumes unfinished ones from their "
               "checkpoints.\nOverrides go right after CONFIG (--grid takes every KEY=V1,V2 that follows it).\n\n"
               "examples:\n  graft sweep configs/tiny.yaml data.path=D train.eval_data=H --grid "
               "model.hidden_size=32,64 train.max_steps=50,100 --out sweeps/s1\n"
               "  graft sweep configs/tiny.yaml data.path=D train.eval_data=H --isoflop 1e15,3e15,1e16 "
               "--sizes bert-1m,bert-3m,bert-10m --out sweeps/iso\n"
               "then: graft scaling sweeps/iso --out sweeps/iso/scaling")
    p.add_argument("config", metavar="CONFIG", help="the YAML config every point starts from")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides shared by every point")
    p.add_argument("--grid", nargs="+", metavar="KEY=V1,V2", help="grid axes: a key and its values")
    p.add_argument("--isoflop", metavar="C1,C2,...", help="FLOP budgets, e.g. 1e15,3e15,1e16")
    p.add_argument("--sizes", metavar="PRESET,...", help="size presets from configs/scaling/*.yaml, e.g. "
                                                          "bert-1m,bert-3m,bert-10m")
    p.add_argument("--backend", choices=("local", "slurm"), default="local",
                   help="local: one point after another on this machine; slurm: one job array (default: local)")
    p.add_argument("--nproc", type=int, default=1, help="processes per run (default: 1)")
    p.add_argument("--out", required=True, metavar="SWEEP_DIR", help="the sweep's directory (created, or continued)")
    p.set_defaults(run=_sweep)

    p = commands.add_parser(
        "scaling", help="fit scaling laws to a sweep, run directories or a CSV of results",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Collect each finished run's parameters (total, non-embedding), tokens, FLOPs and final held-out "
                    "loss, then fit:\nKaplan's power laws in N and in D; Chinchilla's approach 1 (lowest loss per "
                    "budget), approach 2 (a parabola\nin log N per IsoFLOP budget) and approach 3 (L = E + A/N^alpha "
                    "+ B/D^beta, Huber loss on log L, L-BFGS from a\ngrid of starts); bootstrap intervals (resampling "
                    "runs) for every parameter, the compute-optimal exponents\nand N_opt, D_opt at --budget; and a "
                    "held-out check (refit without the largest budget, predict it).",
        epilog="Writes OUT/scaling.md (table), OUT/fits.json (every fit with its interval), OUT/runs.csv (the data) "
               "and plots:\nloss_vs_compute.png, isoflop.png, optimal_allocation.png, residuals.png. Runs left out "
               "(unfinished, diverged,\nno held-out loss) are listed by name.\n\n"
               "A CSV needs the columns params, tokens, loss; flops, name, non_embedding_params and budget are "
               "optional\n(flops default to 6 * params * tokens).\n\n"
               "example: graft scaling sweeps/iso --out sweeps/iso/scaling --budget 1e18")
    p.add_argument("inputs", nargs="+", metavar="SWEEP_DIR|RUN_DIR|RESULTS.csv")
    p.add_argument("--out", required=True, help="directory for the table, JSON and plots")
    p.add_argument("--budget", type=float, help="FLOP budget for N_opt and D_opt (default: the largest in the data)")
    p.add_argument("--draws", type=int, default=1000, help="bootstrap draws (default: %(default)s)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals (default: "
                                                              "%(default)s)")
    p.add_argument("--params", choices=("non_embedding", "total"), default="non_embedding",
                   help="the N of every fit (default: %(default)s, as Kaplan et al.)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling (default: 0)")
    p.set_defaults(run=_scaling)

    from launch.slurm_cli import add_parser as add_slurm_parser

    add_slurm_parser(commands)


    p = commands.add_parser("objectives", help="list the pretraining objectives",
                            description="Every objective objective.name selects: the model families it trains, "
                                        "the dataset it needs (any format; format 2 = word/sentence starts from "
                                        "graft prepare; parallel = prepared with --pair-fields), what it does.")
    p.set_defaults(run=_objectives)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options too (`graft train C --nproc 2 train.max_steps=9`).
    if extra and (not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        args.run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    except RunFailed as exc:  # the ranks under torchrun failed; what they printed is above
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a crash in this process: the traceback, then one line saying what it was
        report(exc)
        print(f"error: {crash_message(exc)}", file=sys.stderr)
        return CRASH_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
