"""The shared sub-models of the config sections: the strict base, and the specs that several
sections hold whole (an index, BM25, an encoder, an actor pool, a distillation loss)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated, and no float is
    NaN or infinite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# numpy's generators take non-negative seeds.
Seed = Annotated[int, Field(ge=0)]


IndexType = Literal["flat", "ivf_flat", "ivf_pq", "hnsw"]


class IndexSpec(Section):
    """Which FAISS index to build and how to search it (inner product throughout)."""

    type: IndexType = "flat"
    nlist: int = Field(1024, ge=1)
    nprobe: int = Field(32, ge=1)
    pq_m: int = Field(16, ge=1)
    pq_nbits: int = Field(8, ge=1, le=16)
    hnsw_m: int = Field(32, ge=2)
    ef_construction: int = Field(200, ge=1)
    ef_search: int = Field(128, ge=1)
    use_gpu: bool = False

    def factory_string(self) -> str:
        if self.type == "flat":
            return "Flat"
        if self.type == "ivf_flat":
            return f"IVF{self.nlist},Flat"
        if self.type == "ivf_pq":
            return f"IVF{self.nlist},PQ{self.pq_m}x{self.pq_nbits}"
        return f"HNSW{self.hnsw_m},Flat"

    def min_train_size(self) -> int:
        """Training vectors FAISS needs: one per IVF centroid, and one per PQ code for PQ."""
        if self.type == "ivf_flat":
            return self.nlist
        if self.type == "ivf_pq":
            return max(self.nlist, 2**self.pq_nbits)
        return 0


class Bm25Spec(Section):
    """Okapi BM25 as bm25s computes it (method "lucene"), with its tokenisation."""

    k1: float = Field(1.5, ge=0)
    b: float = Field(0.75, ge=0, le=1)
    stopwords: str | None = "en"
    stemmer: str | None = Field(
        None, description="PyStemmer language (e.g. 'english'); None: no stemming, as bm25s."
    )


class EncoderSpec(Section):
    """A bi-encoder: the model, how token states pool into a vector, and the token budget."""

    model: str | None = Field(None, description="HF id, local dir or python:<package>.")
    pooling: Literal["cls", "mean"] = "mean"
    normalize: bool = True
    max_length: int = Field(256, ge=1, description="Tokens kept, for queries and passages.")


class ActorPoolSpec(Section):
    """An autoscaling Ray Data pool of model actors (encoding, scoring)."""

    batch_size: int = Field(
        256,
        ge=1,
        description="Rows per forward pass; a scoring actor's call holds one batch, an encoding "
        "actor's 8 (it sorts them by length first, as sentence-transformers does).",
    )
    num_gpus: float = Field(
        0.0, ge=0, description="GPUs per actor; 0: CPU actors; a fraction packs actors on a GPU."
    )
    dtype: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="Autocast dtype. On CPU only bf16, where the CPU has bf16 instructions "
        "(AVX512-BF16, AMX; encoding 2.7x faster, bench/encode_throughput.py); elsewhere CPU "
        "actors run fp32.",
    )
    min_actors: int = Field(1, ge=1)
    max_actors: int = Field(1, ge=1)
    # Ray pins a CPU actor to one torch thread unless told otherwise.
    torch_threads: int | None = Field(None, ge=1, description="Torch threads per CPU actor.")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per actor, e.g. {scorer: 1} (cluster.yaml's GPU spot "
        "nodes): keeps the pool off nodes that lack them, such as the training nodes.",
    )

    @model_validator(mode="after")
    def _bounds_in_order(self) -> ActorPoolSpec:
        if self.min_actors > self.max_actors:
            raise ValueError(f"min_actors {self.min_actors} > max_actors {self.max_actors}")
        return self


class TeacherActors(ActorPoolSpec):
    """The teacher's scoring pool: as ActorPoolSpec, with smaller batches (cross-encoders)."""

    batch_size: int = Field(64, ge=1, description="Rows per actor call and forward pass.")


# ADAM scales neither softmax (§3.2: smoother labels "naturally obtained (instead of scaled by
# softmax temperature)"); student logits are student.scale * <q, p>.
class KlLoss(Section):
    """KL(P_t || P_s) over the candidate set (ADAM Eq. 4-5)."""

    name: Literal["kl"] = "kl"
    teacher_temperature: float = Field(
        1.0,
        gt=0,
        description="Teacher logits / T in L_kd, the build's confidence C(q) and entropies. 1: "
        "untempered, as ADAM. Set it for teachers on another scale (a min-maxed ensemble).",
    )
    student_temperature: float = Field(
        1.0, gt=0, description="Student logits / T in L_kd; the logits already carry student.scale."
    )


class MarginMseLoss(Section):
    """MSE between student and teacher margins (Hofstätter et al., 2020): no temperature."""

    name: Literal["margin_mse"] = "margin_mse"


class RankNetLoss(Section):
    """Pairwise RankNet on the teacher's order (Burges et al., 2005): no temperature."""

    name: Literal["ranknet"] = "ranknet"


KdLoss = Annotated[KlLoss | MarginMseLoss | RankNetLoss, Field(discriminator="name")]


class MlflowSpec(Section):
    """An MLflow destination for tracked metrics (the ``mlflow`` extra)."""

    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI: a server (http://host:5000) or a database "
        "(sqlite:///path.db); None: a SQLite store in <run_dir>/tracking/mlflow (local run dirs).",
    )
    experiment: str = Field("raykd", min_length=1, description="MLflow experiment of the runs.")


class WandbSpec(Section):
    """A Weights & Biases destination for tracked metrics (the ``wandb`` extra)."""

    project: str = Field("raykd", min_length=1, description="W&B project of the runs.")
    mode: Literal["offline", "online"] = Field(
        "offline",
        description="offline: runs written under the run dir for a later `wandb sync`; online: "
        "streamed to W&B (needs WANDB_API_KEY or `wandb login`).",
    )
