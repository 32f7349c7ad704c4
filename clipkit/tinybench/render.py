"""Procedural scenes for the tiny benchmark (version 2): one patterned object among distractors, over a background.

The class of a scene is a property of **the object**, as in Birdsnap, Cars or Flowers: the pattern painted over its
body (``pattern``: stripes or spots), the colour of that pattern (``colour``) and the colour of its head, one end of the
body (``head``: white or black), like a bird's plumage pattern and head colour. Two classes may differ in one
attribute only (red stripes + white head vs red spots + white head vs red stripes + black head), so the class evidence
spans a good share of the object's patches and the confusions are fine-grained. Everything else is drawn independently
of the class: the body's outline, base colour, size, aspect, pose, position and which end is the head, the pattern's
scale and phase, the background colour and gradient, random clutter blobs and strokes, and **distractor objects**
(plain, smaller bodies of any colour, drawn behind the class object) that are not the class object. Two ``SceneDomain`` settings share one
renderer: the benchmark domain (smaller objects anywhere, distractors and clutter, a warm camera) and the pretraining
domain of the tiny CLIP (larger, more central objects, fewer distractors, a neutral camera). Every nuisance is drawn in
the same order whatever the class, so rendering the same generator with another class repaints the object only. Images
are rendered with vectorised NumPy from anti-aliased pseudo signed distances: fast on CPU and bit-exact for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

# ----------------------------------------------------------------------------------------------------------------------
# Vocabulary. Pattern colours are saturated; body colours are muted mid tones, so the pattern and the white or black
# head always contrast with the body.
PATTERN_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 70, 215),
    "yellow": (235, 205, 25),
    "purple": (140, 45, 190),
    "orange": (240, 125, 20),
}
BODY_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "brown": (118, 78, 48),
    "beige": (190, 170, 135),
    "olive": (112, 112, 62),
    "slate": (88, 100, 118),
}
HEAD_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "white": (236, 236, 230),
    "black": (30, 30, 34),
}
BODY_COLOURS_NAMES = tuple(BODY_COLOURS)
BODY_SHAPES: Tuple[str, ...] = ("oval", "block", "hexagon")  # object outlines (a nuisance)
PATTERNS: Tuple[str, ...] = ("stripes", "spots", "checks")  # patterns painted over the object's body

HEXAGON_APOTHEM = 0.93  # body hexagon inradius / r


@dataclass(frozen=True)
class ObjectClass:
    """The class attributes of an object: the pattern over its body, the pattern's colour and its head's colour."""

    pattern: str
    colour: str
    head: str

    def __post_init__(self):
        for value, known, name in ((self.pattern, PATTERNS, "pattern"), (self.colour, tuple(PATTERN_COLOURS), "colour"),
                                   (self.head, tuple(HEAD_COLOURS), "head")):
            if value not in known:
                raise ValueError(f"ObjectClass.{name}={value!r}: known values are {list(known)}")


@dataclass(frozen=True)
class SceneDomain:
    """Distribution of everything that is NOT the class. Lengths are in pixels of an ``image_size`` image."""

    image_size: int = 64  # side of the square image
    body_radius: Tuple[float, float] = (15.0, 21.0)  # uniform range of the object's half length
    body_aspect: Tuple[float, float] = (0.6, 0.9)  # object height / width
    body_rotation_deg: float = 180.0  # object rotation drawn uniformly in +-this
    centre_jitter: float = 1.0  # object centre: uniform over this fraction of the free room (0 = image centre)
    pattern_period: Tuple[float, float] = (0.3, 0.42)  # stripe / spot / check period, as a fraction of the body radius
    stripe_duty: Tuple[float, float] = (0.4, 0.55)  # stripe width / period
    spot_radius: Tuple[float, float] = (0.26, 0.34)  # spot radius / period
    head_length: Tuple[float, float] = (0.45, 0.6)  # length of the head along the long axis / body half length
    colour_jitter: float = 14.0  # std of the per-channel jitter of every colour (0-255 scale)
    distractor_count: Tuple[int, int] = (1, 3)  # inclusive range of plain distractor objects (behind the object)
    distractor_radius: Tuple[float, float] = (5.0, 10.0)  # uniform range of a distractor's half length
    clutter_count: Tuple[int, int] = (3, 7)  # inclusive range of background clutter elements (0, 0 = clean)
    clutter_size: Tuple[float, float] = (3.0, 12.0)  # radius range of clutter blobs / half length of strokes
    background_saturation: float = 1.0  # 1 = background of any colour, 0 = grey backgrounds only
    background_gradient: float = 60.0  # max brightness change across the background (0 = flat)
    noise_std: float = 5.0  # std of the pixel noise (0-255 scale)
    # Camera of the whole domain, applied to every image after compositing and before the noise: per-channel gains,
    # then a blend of weight ``haze`` towards the colour ``haze_rgb`` (defaults: no change).
    channel_gain: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    haze: float = 0.0
    haze_rgb: Tuple[float, float, float] = (128.0, 128.0, 128.0)


# Where a pretraining image differs from a benchmark image: on average larger, more central objects, fewer distractors
# and less clutter, greyer backgrounds, less noise, and a neutral camera. The ranges overlap the benchmark's (web-scale
# pretraining data also shows small objects in clutter).
PRETRAIN_DOMAIN = SceneDomain(
    body_radius=(16.0, 27.0),
    body_aspect=(0.6, 1.0),
    centre_jitter=0.6,
    distractor_count=(0, 2),
    clutter_count=(0, 4),
    background_saturation=0.6,
    background_gradient=20.0,
    noise_std=3.0,
)
# The benchmark's camera has a warm white balance (blue x 0.72, green x 0.9), a dataset-level shift that pretraining
# never shows: it moves the colours the text was aligned with while the classes stay separable, as real fine-grained
# datasets differ from web photos in camera, light and style.
BENCHMARK_DOMAIN = SceneDomain(channel_gain=(1.05, 0.9, 0.72))


@dataclass
class Scene:
    """Parameters of one image (all scalars). Colours are RGB floats in 0-255."""

    object_class: ObjectClass
    body_shape: str  # the object's outline (a nuisance)
    body_colour: str  # name of the body's base colour (a nuisance)
    body_rgb: Tuple[float, float, float]
    pattern_rgb: Tuple[float, float, float]
    head_rgb: Tuple[float, float, float]
    head_side: float  # +1: the head is the +u end of the body, -1: the -u end
    head_length: float  # pixels along the long axis
    background_rgb: Tuple[float, float, float]
    gradient: Tuple[float, float]  # brightness slope along x and y, per image side
    body_centre: Tuple[float, float]
    body_radius: float
    body_aspect: float
    body_angle: float
    pattern_period: float  # pixels
    stripe_duty: float
    spot_radius: float  # pixels
    pattern_phase: Tuple[float, float]  # fraction of a period along the body's u and v axes
    distractors: List[Tuple[str, float, float, float, float, float, Tuple[float, float, float]]] = field(
        default_factory=list)  # distractor: (shape, x, y, radius, aspect, angle, rgb)
    clutter: List[Tuple[int, float, float, float, float, float, Tuple[float, float, float]]] = field(default_factory=list)
    # clutter element: (kind 0=blob 1=stroke, x, y, size, aspect, angle, rgb)


def source_digest(*modules) -> str:
    """SHA-256 (16 hex) of the source files of ``modules``: cached artefacts are keyed by the code that made them."""
    import hashlib

    digest = hashlib.sha256()
    for module in modules:
        with open(module.__file__, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def _jitter(rng: np.random.Generator, rgb, std: float) -> Tuple[float, float, float]:
    return tuple(float(v) for v in np.clip(np.asarray(rgb, dtype=np.float64) + rng.normal(0.0, std, 3), 0, 255))


def _rgb(values) -> Tuple[float, float, float]:
    return tuple(float(v) for v in values)


def sample_scene(rng: np.random.Generator, domain: SceneDomain, object_class: ObjectClass) -> Scene:
    """Draw the nuisance parameters of one image whose object is of ``object_class``.

    The draws do not depend on the class (same generator state, same draws), so two classes rendered from equal
    generators differ only where their objects are."""
    size = domain.image_size
    body_shape = BODY_SHAPES[rng.integers(len(BODY_SHAPES))]
    body_colour = BODY_COLOURS_NAMES[rng.integers(len(BODY_COLOURS_NAMES))]
    radius = rng.uniform(*domain.body_radius)
    aspect = rng.uniform(*domain.body_aspect)
    room = max(size / 2 - radius * aspect, 0.0) * domain.centre_jitter
    centre = (size / 2 + rng.uniform(-room, room), size / 2 + rng.uniform(-room, room))
    body_angle = np.deg2rad(rng.uniform(-domain.body_rotation_deg, domain.body_rotation_deg))
    period = radius * rng.uniform(*domain.pattern_period)
    duty = rng.uniform(*domain.stripe_duty)
    spot = period * rng.uniform(*domain.spot_radius)
    phase = (float(rng.uniform()), float(rng.uniform()))
    head_side = float(rng.choice((-1.0, 1.0)))
    head_length = radius * rng.uniform(*domain.head_length)
    body_rgb = _jitter(rng, BODY_COLOURS[body_colour], domain.colour_jitter)
    pattern_jitter = rng.normal(0.0, domain.colour_jitter, 3)  # drawn before the colour is known: class-independent
    pattern_rgb = _rgb(np.clip(np.asarray(PATTERN_COLOURS[object_class.colour], dtype=np.float64) + pattern_jitter, 0, 255))
    head_jitter = rng.normal(0.0, domain.colour_jitter, 3)
    head_rgb = _rgb(np.clip(np.asarray(HEAD_COLOURS[object_class.head], dtype=np.float64) + head_jitter, 0, 255))
    background = rng.uniform(40, 215, 3)
    background = background.mean() + domain.background_saturation * (background - background.mean())
    gradient = tuple(float(g) for g in rng.uniform(-1, 1, 2) * domain.background_gradient / 2)
    distractors = []
    for _ in range(rng.integers(domain.distractor_count[0], domain.distractor_count[1] + 1)):
        distractors.append((
            BODY_SHAPES[rng.integers(len(BODY_SHAPES))],
            float(rng.uniform(0, size)),
            float(rng.uniform(0, size)),
            float(rng.uniform(*domain.distractor_radius)),
            float(rng.uniform(*domain.body_aspect)),
            float(rng.uniform(0, np.pi)),
            _rgb(rng.uniform(20, 235, 3)),
        ))
    clutter = []
    for _ in range(rng.integers(domain.clutter_count[0], domain.clutter_count[1] + 1)):
        kind = int(rng.integers(2))
        clutter.append((
            kind,
            float(rng.uniform(0, size)),
            float(rng.uniform(0, size)),
            float(rng.uniform(*domain.clutter_size)),
            float(rng.uniform(0.3, 1.0) if kind == 0 else rng.uniform(0.08, 0.2)),
            float(rng.uniform(0, np.pi)),
            _rgb(rng.uniform(0, 255, 3)),
        ))
    return Scene(
        object_class=object_class,
        body_shape=body_shape,
        body_colour=body_colour,
        body_rgb=body_rgb,
        pattern_rgb=pattern_rgb,
        head_rgb=head_rgb,
        head_side=head_side,
        head_length=float(head_length),
        background_rgb=_rgb(background),
        gradient=gradient,
        body_centre=(float(centre[0]), float(centre[1])),
        body_radius=float(radius),
        body_aspect=float(aspect),
        body_angle=float(body_angle),
        pattern_period=float(period),
        stripe_duty=float(duty),
        spot_radius=float(spot),
        pattern_phase=phase,
        distractors=distractors,
        clutter=clutter,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Distances. Every function maps local coordinates (u right, v down, in pixels, shape centred at 0) of shape (..., H, W)
# and a radius broadcastable to them to a signed pseudo distance in pixels (negative inside).


def _polygon_distance(u, v, apothem, sides: int, normal_offset: float):
    """Regular convex polygon with one side normal at angle ``normal_offset`` (exact inside and near the sides)."""
    sector = 2 * np.pi / sides
    phi = np.arctan2(v, u) - normal_offset + sector / 2
    rho = np.hypot(u, v)
    return rho * np.cos(np.mod(phi, sector) - sector / 2) - apothem


def _box_distance(u, v, half_u, half_v):
    return np.maximum(np.abs(u) - half_u, np.abs(v) - half_v)


def body_distance(shape: str, u, v, r, aspect):
    if shape == "oval":  # distance in the stretched frame, scaled back: close to the true distance for aspect ~ 1
        return (np.hypot(u, v / aspect) - r) * aspect
    if shape == "block":
        return _box_distance(u, v, r, r * aspect)
    if shape == "hexagon":
        return _polygon_distance(u, v / aspect, HEXAGON_APOTHEM * r, 6, 0.0) * aspect
    raise ValueError(f"unknown body shape {shape!r}; known: {BODY_SHAPES}")


def pattern_distance(pattern: str, u, v, period: float, duty: float, spot_radius: float, phase):
    """Signed pseudo distance to the pattern's painted parts, in the body's frame (u, v in pixels).

    stripes: bands across the long axis, ``duty * period`` wide; spots: discs of ``spot_radius`` on a staggered
    lattice of pitch ``period``; checks: a checkerboard of ``period / 2`` squares (pretraining only)."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown pattern {pattern!r}; known: {PATTERNS}")
    a = np.mod(u / period + phase[0], 1.0) * period - period / 2  # offset to the nearest band centre, in [-p/2, p/2)
    if pattern == "stripes":
        return np.abs(a) - duty * period / 2
    b = np.mod(v / period + phase[1], 1.0) * period - period / 2  # the same along v
    if pattern == "checks":
        return -np.sign(a * b) * np.minimum(np.abs(a), np.abs(b))  # inside where a and b share a sign
    odd_row = np.mod(np.floor(v / period + phase[1]), 2)  # spots: every other row shifted by half a period
    a = np.mod(u / period + phase[0] + 0.5 * odd_row, 1.0) * period - period / 2
    return np.hypot(a, b) - spot_radius


def _local(xs, ys, centre, angle):
    dx, dy = xs - centre[0], ys - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def _coverage(distance):
    """Anti-aliased coverage of a pixel by a shape: 1 inside, 0 outside, linear over one pixel at the edge."""
    return np.clip(0.5 - distance, 0.0, 1.0)[..., None]


def apply_camera(image: np.ndarray, domain: SceneDomain) -> np.ndarray:
    """The domain's camera on a float (H, W, 3) image in 0-255: channel gains, then the haze blend."""
    image = image * np.asarray(domain.channel_gain, dtype=np.float64)
    return (1.0 - domain.haze) * image + domain.haze * np.asarray(domain.haze_rgb, dtype=np.float64)


def pixel_centres(image_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(H, W) x and y coordinates of the pixel centres."""
    grid = np.arange(image_size, dtype=np.float64) + 0.5
    return np.meshgrid(grid, grid)


def scene_body_distance(scene: Scene, xs, ys):
    """Signed pseudo distance (pixels, negative inside) of every pixel to the scene's class object."""
    u, v = _local(xs, ys, scene.body_centre, scene.body_angle)
    return body_distance(scene.body_shape, u, v, scene.body_radius, scene.body_aspect)


def scene_head_distance(scene: Scene, xs, ys):
    """Signed pseudo distance (pixels, negative on the head's side) of every pixel to the line that ends the object's
    head: the head is where this and ``scene_body_distance`` are both negative."""
    u, _ = _local(xs, ys, scene.body_centre, scene.body_angle)
    return scene.body_radius - scene.head_length - scene.head_side * u


def distractor_distances(scene: Scene, xs, ys) -> List[np.ndarray]:
    """Signed pseudo distance of every pixel to each distractor object, in drawing order."""
    out = []
    for shape, x, y, radius, aspect, angle, _ in scene.distractors:
        u, v = _local(xs, ys, (x, y), angle)
        out.append(body_distance(shape, u, v, radius, aspect))
    return out


def render_scene(scene: Scene, noise: np.ndarray, domain: SceneDomain) -> np.ndarray:
    """Render one scene of ``domain`` (its image size and camera) to an (H, W, 3) uint8 array; ``noise`` is (H, W, 3)
    standard-normal times the noise std. Painting order: background, clutter, distractors, object, its pattern, its
    head (the end of the body beyond ``body_radius - head_length`` on the ``head_side``)."""
    image_size = domain.image_size
    xs, ys = pixel_centres(image_size)
    background = np.asarray(scene.background_rgb)
    shade = (xs - image_size / 2) / image_size * scene.gradient[0] + (ys - image_size / 2) / image_size * scene.gradient[1]
    image = background + shade[..., None]
    for kind, x, y, size, aspect, angle, rgb in scene.clutter:
        u, v = _local(xs, ys, (x, y), angle)
        distance = (np.hypot(u, v / aspect) - size) * aspect if kind == 0 else _box_distance(u, v, size, size * aspect)
        alpha = _coverage(distance)
        image = image * (1 - alpha) + np.asarray(rgb) * alpha
    for distance, distractor in zip(distractor_distances(scene, xs, ys), scene.distractors):
        alpha = _coverage(distance)
        image = image * (1 - alpha) + np.asarray(distractor[-1]) * alpha
    u, v = _local(xs, ys, scene.body_centre, scene.body_angle)
    body = _coverage(body_distance(scene.body_shape, u, v, scene.body_radius, scene.body_aspect))
    image = image * (1 - body) + np.asarray(scene.body_rgb) * body
    painted = body * _coverage(pattern_distance(scene.object_class.pattern, u, v, scene.pattern_period,
                                                scene.stripe_duty, scene.spot_radius, scene.pattern_phase))
    image = image * (1 - painted) + np.asarray(scene.pattern_rgb) * painted
    head = body * _coverage(scene_head_distance(scene, xs, ys))
    image = image * (1 - head) + np.asarray(scene.head_rgb) * head
    image = apply_camera(image, domain)
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


def render(rng: np.random.Generator, domain: SceneDomain, object_class: ObjectClass) -> Tuple[np.ndarray, Scene]:
    """Sample and render one image; returns (uint8 (H, W, 3) array, its scene)."""
    scene = sample_scene(rng, domain, object_class)
    noise = rng.standard_normal((domain.image_size, domain.image_size, 3)) * domain.noise_std
    return render_scene(scene, noise, domain), scene


def render_batch(rng: np.random.Generator, domain: SceneDomain, classes: Sequence[ObjectClass]):
    """Render one image per object class in ``classes``; returns ((B, H, W, 3) uint8, list of scenes)."""
    images, scenes = zip(*(render(rng, domain, object_class) for object_class in classes))
    return np.stack(images), list(scenes)
