"""to_engines.py — the kit's canonical data as verl and TRL read it (parquet), for runs that outgrow one GPU.

    python scripts/to_engines.py          # data/verif_{train,eval}.jsonl -> data/verif_{train,eval}.{verl,trl}.parquet
    python scripts/to_engines.py --input my.jsonl --out-dir /data/verif

For each canonical file NAME.jsonl (read and validated by verify_lib.load_examples) it writes:
    NAME.verl.parquet   verl's RL layout (data.train_files=...): data_source, prompt (a chat), ability,
                        reward_model {style, ground_truth: the canonical example as JSON text}, extra_info {split,
                        index, id}; scored by verify_lib.compute_score / compute_score_batch
    NAME.trl.parquet    for TRL's GRPOTrainer: prompt (a chat), id, hard, soft; scored by verify_lib.trl_reward_func
                        (load it with datasets.load_dataset("parquet", data_files=...)["train"])
Needs pyarrow (datasets, TRL and verl all bring it).
"""
import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import verify_lib  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, nargs="+",
                   default=[HERE.parent / "data/verif_train.jsonl", HERE.parent / "data/verif_eval.jsonl"],
                   help="canonical JSONL files (default: what 01_build_data.py writes)")
    p.add_argument("--out-dir", type=Path, default=None, help="where the parquet files go (default: beside each input)")
    return p.parse_args(argv)


def write_parquet(rows: list[dict], path: Path) -> None:
    """Rows to one parquet file, written beside its target and renamed into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.replace(path)


def convert(path: Path, out_dir: Path) -> list[Path]:
    """NAME.jsonl -> NAME.verl.parquet and NAME.trl.parquet in out_dir; the split verl records is NAME's last word
    (verif_train -> train)."""
    examples = verify_lib.load_examples(path)
    split = path.stem.rsplit("_", 1)[-1]
    verl_rows = [verify_lib.verl_row(ex, split, i) for i, ex in enumerate(examples)]
    outputs = {out_dir / f"{path.stem}.verl.parquet": verl_rows,
               out_dir / f"{path.stem}.trl.parquet": [verify_lib.trl_row(ex) for ex in examples]}
    out_dir.mkdir(parents=True, exist_ok=True)
    for out, rows in outputs.items():
        write_parquet(rows, out)
    return list(outputs)


def main(argv=None):
    args = parse_args(argv)
    for path in args.input:
        outs = convert(path, args.out_dir or path.parent)
        print(f"{path}: " + ", ".join(str(o) for o in outs))


if __name__ == "__main__":
    main()
