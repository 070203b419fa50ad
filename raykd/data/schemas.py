"""Arrow schemas of the run directory's artifacts (DESIGN.md, "Artifacts")."""

import pyarrow as pa

# Example kinds (EXAMPLES.kind, SCORES.kind, TRAIN.kinds): positive, pool negative, reinforced
# negative and masked positive (ADAM's dark examples).
KINDS = ("pos", "neg", "rein", "mask")

CORPUS = pa.schema([("pid", pa.string()), ("text", pa.string()), ("title", pa.string())])
QUERIES = pa.schema([("qid", pa.string()), ("text", pa.string())])
QRELS = pa.schema([("qid", pa.string()), ("pid", pa.string()), ("rel", pa.int32())])
POOL = pa.schema(
    [
        ("qid", pa.string()),
        ("pid", pa.string()),
        ("rank", pa.int32()),
        ("score", pa.float32()),
        ("source", pa.string()),
    ]
)
EXAMPLES = pa.schema(
    [
        ("qid", pa.string()),
        ("eid", pa.string()),
        ("kind", pa.string()),
        ("pid", pa.string()),
        ("pid2", pa.string()),
        ("mask_ratio", pa.float32()),
        ("text", pa.string()),
    ]
)
SCORES = pa.schema(
    [("qid", pa.string()), ("eid", pa.string()), ("kind", pa.string()), ("score", pa.float32())]
)
TRAIN = pa.schema(
    [
        ("qid", pa.string()),
        ("query", pa.string()),
        ("pos", pa.string()),
        ("cands", pa.list_(pa.string())),
        ("teacher", pa.list_(pa.float32())),
        ("kinds", pa.list_(pa.string())),
        ("confidence", pa.float32()),
    ]
)
