"""The run directory's copy of what `graft export` needs from the dataset: its manifest and tokenizer.

Training copies `manifest.json` (the model card's data statistics) and `tokenizer.json` from data.path, a
directory or a URL, into RUN_DIR/dataset/ when a run first starts, so the run can be exported after its
dataset was moved, deleted or went offline. Every later start checks the copy against data.path: a run
resumed on another dataset is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from data_pipeline.dataset_files import dataset_file, read_dataset_text, write_atomic
from data_pipeline.errors import UserError
from data_pipeline.fetch import RemoteConfig
from data_pipeline.shards import MANIFEST, TOKENIZER_FILE, Manifest
from pretrain.run_dir import DATASET_DIR

FILES = (MANIFEST, TOKENIZER_FILE)


def keep_dataset_files(run_dir: Path, data_path: str, copy: bool, remote: RemoteConfig | None = None) -> Manifest:
    """Check the dataset's files against the copy in `run_dir/dataset`, or, where there is none yet and `copy`
    (rank 0), make it (all or none). Every rank checks, so that all of them stop at once on another dataset.
    Returns the dataset's manifest, parsed from the text just read (no second fetch for a URL dataset, whose
    files are fetched with `remote`'s retries)."""
    texts = {name: read_dataset_text(data_path, name, remote) for name in FILES}
    manifest = Manifest.parse(texts[MANIFEST], dataset_file(data_path, MANIFEST))
    kept = run_dir / DATASET_DIR
    if kept.is_dir():
        changed = [name for name in FILES if (kept / name).read_bytes() != texts[name].encode()]
        if changed:
            raise UserError(f"{data_path} is not the dataset this run started on: the copy in {kept} is another "
                            f"{' and '.join(changed)}; resume with the data.path the run trained on "
                            "(moved is fine, re-prepared is not), or start a new run (train.run_dir=NEW_DIR; "
                            "`graft export` and `graft import` carry the weights over)")
        return manifest
    if not copy:
        return manifest
    staging = run_dir / (DATASET_DIR + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)  # left by a process killed while copying
    staging.mkdir()
    for name, text in texts.items():
        write_atomic(staging / name, text.encode())
    staging.rename(kept)
    return manifest


def dataset_source(run_dir: Path, data_path: str) -> str:
    """Where export reads the dataset's manifest and tokenizer: the run's copy, or data.path for a run
    directory made before training kept one."""
    kept = run_dir / DATASET_DIR
    return str(kept) if kept.is_dir() else data_path


def dataset_tokenizer(root: str, manifest: Manifest, remote: RemoteConfig | None = None):
    """The tokenizer a dataset was prepared with: `tokenizer.json` of `root` (a run's copy, or a dataset
    directory or URL), checked against `manifest`'s hash."""
    # Here, not at the top: the launcher and the ranks import this module, and only some objectives (and export)
    # read the tokenizer, through the `tokenizers` library.
    from data_pipeline.tokenizer import parse_tokenizer, tokenizer_hash

    where = dataset_file(root, TOKENIZER_FILE)
    text = read_dataset_text(root, TOKENIZER_FILE, remote)
    tokenizer = parse_tokenizer(text, where, "; re-run `graft prepare`")
    if tokenizer_hash(text) != manifest.tokenizer_sha256:
        raise UserError(f"{where} is not the tokenizer the dataset's manifest names (sha256 differs); the "
                        "dataset was changed after `graft prepare` wrote it")
    return tokenizer
