"""Glue for exports with remote code (`trust_remote_code=True`): copied beside Graft's own model files, which
the export makes importable flat in one directory (`pretrain.hf.remote_code`). Never imported from here."""
