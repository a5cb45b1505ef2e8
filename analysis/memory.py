"""The analytic memory table of Section II.E: dominant memory terms of the three ways to get a meta-gradient.

For one configuration (channels c, train way N, shot K, query Q, population P, image side S = 32):

  D_phi   the meta-learner's parameter count: `num_params(init_params(...))` of our ProtoNet
          (for 4 blocks: 9c + c + 2c in the first, 9c^2 + c + 2c in each other = 27c^2 + 21c).
  D_psi   the inner-loop model state, ProtoNet's prototypes: N x d, with d the embedding size of our
          model at S x S input (2 x 2 x c at 32 x 32, read from the model's output shape).
  backprop     Omega_BP = g x l. A ProtoNet "task" is one episode, l = 1; g = the activations of
               embedding the episode's N (K + Q) images: per image the input (S^2) and, for each block
               b = 0..3 at side s_b = S / 2^b, the conv, batch-norm and ReLU outputs (3 s_b^2 c) and
               the max-pool output ((s_b / 2)^2 c). At S = 32: 1024 + 4420 c floats per image.
  forward mode Omega_FM = D_psi x D_phi (the Jacobian of the prototypes w.r.t. the parameters).
  ES           Omega_ES = P x D_phi (the population matrix, all P candidates); per core = (P / shards) x D_phi.

Bytes at float32 (4 per number). These are the paper's dominant terms, not measured peaks: XLA
fuses and rematerializes, and JAX's backward pass saves somewhat more than g (tests compare).
"""

from __future__ import annotations

from functools import cache

import pandas as pd

from .paper import parse_number

BYTES_PER_FLOAT = 4
BLOCKS = 4
IMAGE_SIZE = 32
QUERY = 5  # Snell et al.'s training queries per class, the project's default (task.query)
MIB = 2**20


def param_count_formula(channels: int, blocks: int = BLOCKS) -> int:
    """Parameters of the 4-block conv net by hand: 3x3 conv (weights + bias) and batch-norm scale + bias."""
    first = 9 * 1 * channels + channels + 2 * channels
    other = 9 * channels * channels + channels + 2 * channels
    return first + (blocks - 1) * other


@cache
def model_sizes(channels: int, image_size: int = IMAGE_SIZE) -> tuple[int, int]:
    """(parameter count, embedding size) of our real ProtoNet, from its shapes (no computation)."""
    import jax  # imported here: only the memory table needs JAX

    from esmeta.protonet import embed, init_params, num_params

    params = jax.eval_shape(lambda key: init_params(key, channels, image_size), jax.random.key(0))
    images = jax.ShapeDtypeStruct((1, image_size, image_size, 1), jax.numpy.float32)
    out = jax.eval_shape(lambda p, x: embed(p, x), params, images)
    return num_params(params), int(out.shape[-1])


def activation_floats_per_image(channels: int, image_size: int = IMAGE_SIZE, blocks: int = BLOCKS) -> int:
    """Activations of embedding one image: the input and each block's conv, BN, ReLU and pool outputs."""
    total = image_size * image_size
    side = image_size
    for _ in range(blocks):
        total += 3 * side * side * channels  # conv, batch norm, ReLU outputs
        side //= 2
        total += side * side * channels  # max-pool output
    return total


def memory_row(
    *, channels: int, way: int, shot: int, population: int, shards: int, query: int = QUERY,
    image_size: int = IMAGE_SIZE,
) -> dict[str, float | int]:
    """The three dominant terms (bytes) for one configuration, with the sizes behind them."""
    params, embedding = model_sizes(channels, image_size)
    images = way * (shot + query)
    backprop = images * activation_floats_per_image(channels, image_size) * BYTES_PER_FLOAT
    d_psi = way * embedding
    forward = d_psi * params * BYTES_PER_FLOAT
    es = population * params * BYTES_PER_FLOAT
    return {
        "D_phi": params,
        "embedding": embedding,
        "D_psi": d_psi,
        "episode_images": images,
        "backprop_bytes": backprop,
        "forward_bytes": forward,
        "es_bytes": es,
        "es_per_core_bytes": (population // shards) * params * BYTES_PER_FLOAT,
        "forward_over_es": forward / es,
        "backprop_over_es": backprop / es,
    }


SHARDS = {"v3-8": 8, "v3-256": 256, "v2-512": 512}


def memory_table(table3: pd.DataFrame) -> pd.DataFrame:
    """A row per configuration of Table III (the paper's CSV): its sizes and the three memory terms."""
    rows = []
    for _, row in table3.iterrows():
        channels = int(parse_number(row["channels"]))
        way = int(parse_number(row["train_way"]))
        shot = int(parse_number(row["shot"]))
        population = int(parse_number(row["total_pop"]))
        rows.append({
            "tpu": row["tpu"], "channels": channels, "pop_per_core": int(parse_number(row["pop_per_core"])),
            "total_pop": population, "train_way": way, "shot": shot, "query": QUERY,
            **memory_row(channels=channels, way=way, shot=shot, population=population, shards=SHARDS[row["tpu"]]),
        })
    return pd.DataFrame(rows)


def _mib(n: float) -> str:
    return f"{n / MIB:,.1f}"


def memory_display(table: pd.DataFrame) -> pd.DataFrame:
    """The memory table for reading: sizes, MiB, and the ratios to the ES term."""
    return pd.DataFrame({
        "TPU": table["tpu"],
        "Channels": table["channels"].astype(str),
        "Pop. per core": table["pop_per_core"].astype(str),
        "Total pop. P": table["total_pop"].astype(str),
        "Way N": table["train_way"].astype(str),
        "D_phi": table["D_phi"].map("{:,}".format),
        "D_psi = N x d": table["D_psi"].map("{:,}".format),
        "Backprop g x l (MiB)": table["backprop_bytes"].map(_mib),
        "Forward D_psi x D_phi (MiB)": table["forward_bytes"].map(_mib),
        "ES P x D_phi (MiB)": table["es_bytes"].map(_mib),
        "ES per core (MiB)": table["es_per_core_bytes"].map(_mib),
        "Forward / ES": table["forward_over_es"].map("{:.3g}".format),
        "Backprop / ES": table["backprop_over_es"].map("{:.3g}".format),
    })


MEMORY_TITLE = "Memory: dominant terms of backprop, forward mode and ES (Section II.E), Table III's configurations"
MEMORY_CAPTION = (
    "Float32 bytes, from our model's real sizes: D_phi = parameters (27c² + 21c), d = embedding size (2·2·c at "
    f"32x32), D_psi = N·d (the prototypes). Backprop: g × l with l = 1 episode, g = activations of embedding "
    f"N·(K + {QUERY}) images (input + conv, BN, ReLU and pool outputs of the 4 blocks). Forward mode: the "
    "Jacobian D_psi × D_phi. ES: the population matrix P × D_phi."
)


def forty_times_note(table: pd.DataFrame) -> str:
    """The paper's "forty times smaller" case (64 channels, total population 64), as we compute it."""
    case = table[(table["channels"] == 64) & (table["total_pop"] == 64)]
    if case.empty:
        return ""
    row = case.iloc[0]
    return (
        f"64 channels, population 64 (the paper's \"forty times smaller\"): ES {_mib(row['es_bytes'])} MiB against "
        f"forward mode's Jacobian {_mib(row['forward_bytes'])} MiB = {row['forward_over_es']:.1f}x smaller "
        f"(D_psi / P = {row['D_psi']} / {row['total_pop']}), and against backprop's episode activations "
        f"{_mib(row['backprop_bytes'])} MiB = {row['backprop_over_es']:.2f}x smaller."
    )


def render_memory_markdown(table: pd.DataFrame) -> str:
    """Heading, table, caption and the forty-times case, as markdown."""
    from .tables import markdown_table

    parts = [f"## {MEMORY_TITLE}", "", markdown_table(memory_display(table)), "", MEMORY_CAPTION]
    note = forty_times_note(table)
    if note:
        parts += ["", note]
    return "\n".join(parts) + "\n"


def render_memory_latex(table: pd.DataFrame) -> str:
    """The memory table as LaTeX."""
    from .tables import frame_latex

    return frame_latex(memory_display(table), f"{MEMORY_TITLE}. {MEMORY_CAPTION}", "tab:memory")
