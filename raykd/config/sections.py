"""The job config's sections: one pydantic model per YAML section, every one forbidding unknown
keys. A section travels whole from YAML to the function that uses it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from raykd.config.checks import cross_section_errors
from raykd.config.experiment import TrackingSection, TuneSection
from raykd.config.specs import (
    ActorPoolSpec,
    Bm25Spec,
    EncoderSpec,
    IndexSpec,
    KdLoss,
    KlLoss,
    Section,
    Seed,
    TeacherActors,
)


class RaySection(Section):
    """The Ray cluster to join, or the local Ray to start."""

    address: str | None = Field(
        None,
        description="Cluster to join ('auto', 'ray://...'); RAY_ADDRESS also works. "
        "None starts a local Ray bound to loopback.",
    )
    num_cpus: int | None = Field(None, description="CPUs of a local Ray (default: all).")
    num_gpus: int | None = Field(None, description="GPUs of a local Ray (default: detected).")


class Splits(Section):
    """Which qrels split trains and which evaluates."""

    train: str = "train"
    eval: str = "dev"


class DataSection(Section):
    """The collection: its layout, location, splits and query caps (the prepare stage)."""

    format: Literal["beir", "msmarco", "parquet", "demo"] = Field(
        "beir", description="Input layout; 'demo' generates the built-in collection."
    )
    path: str | None = Field(None, description="Collection folder (local or URI).")
    splits: Splits = Splits()
    max_train_queries: int | None = Field(
        None, ge=1, description="Cap on training queries (a seeded subset), for small runs."
    )
    max_eval_queries: int | None = Field(None, ge=1, description="Cap on eval queries.")
    seed: Seed = 0


class MiningSection(Section):
    """The training pool per query: which sources, how deep (the mine stage)."""

    sources: list[Literal["bm25", "dense", "file", "random"]] = Field(
        ["bm25", "random"], min_length=1, description="Pool sources, merged per query."
    )
    depth: int = Field(100, ge=1, description="Retriever top-k per source (bm25, dense).")
    n_random: int = Field(100, ge=0, description="Uniform random passages per query.")
    bm25: Bm25Spec = Bm25Spec()
    dense: EncoderSpec = Field(
        default_factory=EncoderSpec, description="The bi-encoder of the 'dense' source."
    )
    file_path: str | None = Field(None, description="Pool file for the 'file' source.")
    file_format: Literal["trec", "st_hard_negatives"] = "trec"
    index: IndexSpec = IndexSpec()
    actors: ActorPoolSpec = ActorPoolSpec()
    seed: Seed = 0


class TeacherMember(Section):
    """One member of an ensemble teacher: its kind, weight and that kind's settings."""

    kind: Literal["cross_encoder", "bi_encoder", "bm25"]
    weight: float = Field(1.0, gt=0)
    model: str | None = None
    pooling: Literal["cls", "mean"] = "mean"
    normalize: bool = True
    similarity: Literal["dot", "cosine"] = "cosine"
    max_length: int | None = Field(None, description="Bi-encoder max length (both sides).")
    bm25: Bm25Spec = Bm25Spec()


class TrainerSection(Section):
    """What the training loop reads (the student's ``train``, the teacher's ``teacher.train``)."""

    epochs: int = Field(1, ge=1)
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(0.5, gt=0, description="Leave CPUs for Ray Data reads.")
    torch_threads: int | None = Field(
        None, ge=1, description="Torch threads per CPU worker (Ray pins workers to one thread)."
    )
    lr: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(128, ge=1, description="Global batch (queries) per step.")
    shuffle_buffer: int = Field(
        0,
        ge=0,
        description="Rows each worker shuffles per epoch; 0: the build's order (by qid), which "
        "keeps a seed's run reproducible (Ray Data's local shuffle is not, even seeded).",
    )
    grad_accum: int = Field(1, ge=1)
    warmup_steps: int = Field(
        100, ge=0, description="Linear warm-up, then linear decay to 0 (transformers' schedule)."
    )
    zero_stage: int = Field(0, ge=0, le=3)
    bf16: bool | None = Field(None, description="None: bf16 on GPU, fp32 on CPU.")
    grad_checkpointing: bool = False
    grad_clip: float = Field(1.0, ge=0, description="Gradient-norm clipping; 0: off.")
    report_every: int = Field(10, ge=1)
    max_failures: int = Field(1, ge=-1, description="Worker-group restarts; -1: unlimited.")
    num_to_keep: int = Field(2, ge=1)
    checkpoint_every_steps: int | None = Field(
        None, ge=1, description="Also checkpoint every N optimizer steps (default: per epoch)."
    )
    worker_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per train worker, e.g. {on_demand: 1} (cluster.yaml).",
    )
    seed: Seed = 0

    @property
    def use_bf16(self) -> bool:
        return self.use_gpu if self.bf16 is None else self.bf16

    @property
    def micro_batch(self) -> int:
        """Queries per worker per forward pass."""
        return max(1, self.batch_size // (self.num_workers * self.grad_accum))

    def steps_per_epoch(self, n_rows: int) -> int:
        """Optimizer steps per epoch: every worker gets n_rows // workers rows, last batch
        dropped."""
        return (n_rows // self.num_workers // self.micro_batch) // self.grad_accum


class TeacherTrainSection(TrainerSection):
    """Fine-tuning of the cross-encoder teacher (the teacher-train stage)."""

    batch_size: int = Field(16, ge=1, description="Global batch (queries) per step.")
    num_to_keep: int = Field(1, ge=1)
    n_negatives: int = Field(7, ge=1, description="Pool negatives per training query.")


class TeacherSection(Section):
    """The teacher that scores every example (the score stage, and the eval's rerank)."""

    kind: Literal["cross_encoder", "bi_encoder", "bm25", "ensemble"] = "cross_encoder"
    model: str | None = Field(None, description="HF id or local dir (cross/bi-encoder).")
    pooling: Literal["cls", "mean"] = "mean"
    normalize: bool = True
    similarity: Literal["dot", "cosine"] = "cosine"
    bm25: Bm25Spec = Bm25Spec()
    members: list[TeacherMember] = Field(default_factory=list, description="Ensemble members.")
    normalization: Literal["zscore", "minmax"] = "zscore"
    max_query_length: int | None = Field(
        32,
        description="Query tokens kept; None: truncate the pair jointly to max_passage_length "
        "(longest_first, as sentence-transformers' CrossEncoder does).",
    )
    max_passage_length: int = Field(128, ge=1)
    bucket_rows: int = Field(
        2048, ge=1, description="Rows sorted by token length together before batching."
    )
    shard_rows: int = Field(
        100_000, ge=1, description="Rows per resumable scoring shard (sharded by qid hash)."
    )
    actors: TeacherActors = TeacherActors()
    train: TeacherTrainSection | None = Field(
        None, description="Fine-tune the cross-encoder first (teacher-train stage)."
    )


class AugmentSection(Section):
    """Dark examples: reinforced negatives and masked positives (ADAM §3.3; the augment stage)."""

    n_rein: int = Field(
        20, ge=0, description="Reinforced negatives per positive (>= the largest m); 0: none."
    )
    rein_pick: Literal["top", "random"] = Field(
        "top",
        description="Which retrieved negatives get twins: the top n_rein by rank, or n_rein drawn "
        "at random among them (seeded); with n_rein = m and dark_base random, a dark set's "
        "originals are m random hard negatives, as ADAM (§4.3).",
    )
    mask_ratios: list[float] = Field(
        [0.15, 0.25, 0.35, 0.45, 0.55], description="One masked positive per ratio; []: none."
    )
    tokenizer: str | None = Field(
        None,
        description="Tokenizer for [SEP]/[MASK] (default: the teacher's, else the first neural "
        "ensemble member's, else literal [SEP]/[MASK] on whitespace words).",
    )
    seed: Seed = 0
    batch_size: int = Field(1024, ge=1, description="Examples per Ray Data actor call.")
    min_actors: int = Field(1, ge=1, description="Text-attaching (tokenising) actors, min.")
    max_actors: int = Field(1, ge=1, description="Text-attaching (tokenising) actors, max.")

    @field_validator("mask_ratios")
    @classmethod
    def _ratios_in_range(cls, v: list[float]) -> list[float]:
        if any(not 0.0 < r < 1.0 for r in v):
            raise ValueError("mask ratios must lie in (0, 1)")
        return v


class StudentSection(Section):
    """The dual-encoder student: its init, pooling, score scale and token budgets."""

    model: str | None = Field(None, description="HF id or local dir of the student init.")
    pooling: Literal["cls", "mean"] = "mean"
    normalize: bool = True
    shared_towers: bool = True
    scale: float = Field(
        1.0,
        gt=0,
        description="Score = scale * <q, p>: the student's logits in every loss (1/scale acts as a "
        "temperature on all of them; ADAM: 1, an unnormalised dot product).",
    )
    max_query_length: int = Field(32, ge=1)
    max_passage_length: int = Field(128, ge=1)


class CandidatesSection(Section):
    """How each query's candidate set is drawn from its scored pool (the build stage)."""

    strategy: Literal["random", "topk", "stratified", "dark"] = "stratified"
    m: int = Field(10, ge=1, description="Negatives per query (ADAM §4.3: 10).")
    n_strata: int = Field(5, ge=1)
    binning: Literal["quantile", "equal_width"] = Field(
        "equal_width",
        description="Stratified strata: equal_width bins over the query's score range cover the "
        "spectrum (Jang et al.); quantile strata are equal-sized.",
    )
    allocation: Literal["equal", "proportional"] = Field(
        "equal",
        description="Stratified quotas: equal per stratum, or proportional to stratum size "
        "(with quantile strata, the inclusion probabilities of uniform random sampling). An "
        "empty or short stratum's quota goes to the nearest strata.",
    )
    per_stratum: int | None = Field(None, ge=1)
    topk_by: Literal["teacher", "retriever"] = "teacher"
    margin: float | None = Field(None, description="Teacher-margin filter (Parry et al.).")
    n_masked: int | None = Field(
        5, ge=0, description="Masked positives in a dark set (ADAM §4.3: 5); None: all."
    )
    dark_base: Literal["random", "topk", "stratified"] = Field(
        "random",
        description="Strategy choosing a dark set's m original negatives among the twinned ones; "
        "random is ADAM's (§4.3).",
    )
    on_short: Literal["fail", "fill"] = "fail"
    seed: Seed = 0


class TrainSection(TrainerSection):
    """The student's training: the loop's settings and the objective (ADAM Eq. 9)."""

    lambda_sup: float = Field(0.01, ge=0)
    objective: Literal["kd_sup", "kd", "sup"] = Field(
        "kd_sup",
        description="kd_sup: L_kd + lambda_sup * L_sup (ADAM Eq. 9); kd: distillation alone; "
        "sup: InfoNCE over the positive and the candidate set alone, no teacher (localised "
        "contrastive estimation, the ablation of Parry et al.).",
    )
    loss: KdLoss = Field(
        default_factory=lambda: KlLoss(),
        description="L_kd, by name: kl (ADAM Eq. 4-5, with its temperatures), margin_mse or "
        "ranknet. A dark set is always distilled with kl (ADAM Eq. 9).",
    )
    sup_temperature: float = Field(
        1.0,
        gt=0,
        description="Student logits / T in L_sup; 1: untempered (ADAM Eq. 3.1), so lambda_sup "
        "keeps the paper's trade-off. Scale cosine students with student.scale instead.",
    )
    in_batch_negatives: bool = False

    @field_validator("loss", mode="before")
    @classmethod
    def _loss_by_name(cls, v: Any) -> Any:
        # ``--set train.loss=ranknet`` and tune spaces name a loss with its defaults; settings
        # without a name are the default loss's.
        if isinstance(v, str):
            return {"name": v}
        return {"name": "kl", **v} if isinstance(v, dict) and "name" not in v else v

    @property
    def teacher_temperature(self) -> float:
        """T of the teacher distribution P_t the student is distilled towards (the build's C(q),
        the report's entropies): the kl loss's; 1 (raw scores) for the losses without one."""
        return self.loss.teacher_temperature if isinstance(self.loss, KlLoss) else 1.0


class EvalSection(Section):
    """Which systems are evaluated, how deep, on which measures (the eval stage)."""

    depth: int = Field(1000, ge=1)
    measures: list[str] = Field(["RR@10", "nDCG@10", "R@50", "R@100", "R@1000"], min_length=1)
    rel_threshold: int = Field(1, ge=1)
    index: IndexSpec = IndexSpec()
    systems: list[Literal["bm25", "init", "student", "teacher_rerank"]] = [
        "bm25",
        "init",
        "student",
        "teacher_rerank",
    ]
    rerank_depth: int = Field(
        100, ge=1, description="Top-k of each rerank source that the teacher reranks."
    )
    rerank_sources: list[Literal["bm25", "dense"]] = Field(
        ["bm25"],
        min_length=1,
        description="First stages whose top rerank_depth, merged per query, the teacher "
        "reranks: bm25 (mining.bm25) and/or dense (mining.dense), as the mine stage pools.",
    )
    query_max_length: int | None = Field(
        None, ge=1, description="Query tokens at eval; None: student.max_query_length."
    )
    passage_max_length: int | None = Field(
        None, ge=1, description="Passage tokens at eval; None: student.max_passage_length."
    )
    actors: ActorPoolSpec = Field(
        default_factory=ActorPoolSpec, description="Corpus encoding (init, student)."
    )


class JobConfig(Section):
    """A whole job: one section per pipeline stage, validated together."""

    run_dir: str = Field("runs/default", description="Local path or s3:// / gs:// URI.")
    ray: RaySection = RaySection()
    data: DataSection = DataSection()
    mining: MiningSection = MiningSection()
    teacher: TeacherSection = TeacherSection()
    augment: AugmentSection = AugmentSection()
    student: StudentSection = StudentSection()
    candidates: CandidatesSection = CandidatesSection()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    tune: TuneSection = TuneSection()
    tracking: TrackingSection = TrackingSection()

    @model_validator(mode="after")
    def _sections_agree(self) -> JobConfig:
        errors = cross_section_errors(self)
        if errors:
            raise ValueError("\n".join(errors))
        return self

    def subtree(self, dotted: str) -> Any:
        """The JSON-able value at a dotted path (used for stage fingerprints)."""
        node: Any = self.model_dump(mode="json")
        for part in dotted.split("."):
            node = node[part]
        return node
