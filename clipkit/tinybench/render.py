"""Procedural scenes for the tiny benchmark: an object (body) carrying a small mark, over a background.

The class of a scene is its mark (colour x shape); everything else (body shape, colour, size, pose, background and
clutter) is drawn independently of the class. Two ``SceneDomain`` settings share one renderer: the benchmark domain
(small objects anywhere, cluttered backgrounds) and the pretraining domain of the tiny CLIP (large centred objects on
clean backgrounds). Rendering is vectorised NumPy over a batch and uses anti-aliased pseudo signed distances, so it is
fast on CPU and bit-exact for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

# ----------------------------------------------------------------------------------------------------------------------
# Vocabulary. Mark colours are saturated; body colours are muted, so a mark always contrasts with its body.
MARK_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 70, 215),
    "yellow": (235, 205, 25),
    "purple": (140, 45, 190),
    "orange": (240, 125, 20),
}
# Shape -> phrases saying what the shape looks like (used in captions and in the generated descriptions).
MARK_SHAPES: Dict[str, Tuple[str, ...]] = {
    "circle": ("with a round outline", "with no corners", "shaped like a disc"),
    "square": ("with four equal sides", "with four right-angled corners", "shaped like a box"),
    "triangle": ("with three corners", "with three straight sides", "pointing upwards"),
    "cross": ("with two crossing bars", "shaped like a plus sign", "with four arms"),
    "star": ("with five points", "with five pointed tips", "shaped like a star"),
    "diamond": ("with four corners pointing up, down, left and right", "shaped like a rhombus", "standing on a corner"),
}
BODY_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "white": (228, 228, 222),
    "black": (38, 38, 42),
    "brown": (118, 78, 48),
    "beige": (206, 186, 150),
    "olive": (112, 112, 62),
}
BODY_SHAPES: Tuple[str, ...] = ("oval", "block", "hexagon")

# Geometry of each shape relative to its nominal radius r (chosen so that all marks cover a similar area).
SQUARE_APOTHEM = 0.85  # half side of the square / r
TRIANGLE_APOTHEM = 0.6  # inradius of the triangle / r (its corners lie at 1.2 r)
DIAMOND_APOTHEM = 0.72  # distance from centre to each side of the diamond / r
CROSS_BAR_HALF_WIDTH = 0.36  # half thickness of each bar of the cross / r
STAR_OUTER, STAR_INNER = 1.2, 0.5  # radius of the star's tips and of its inner corners / r
HEXAGON_APOTHEM = 0.93  # body hexagon inradius / r


@dataclass(frozen=True)
class SceneDomain:
    """Distribution of everything that is NOT the class. Lengths are in pixels of an ``image_size`` image."""

    image_size: int = 64  # side of the square image
    body_radius: Tuple[float, float] = (13.0, 19.0)  # uniform range of the body's half length
    body_aspect: Tuple[float, float] = (0.65, 1.0)  # body height / width
    body_rotation_deg: float = 180.0  # body rotation drawn uniformly in +-this
    centre_jitter: float = 1.0  # body centre: uniform over this fraction of the free room (0 = image centre)
    mark_radius: Tuple[float, float] = (4.5, 5.5)  # uniform range of the mark's nominal radius
    mark_offset: float = 0.45  # mark centre: uniform in a disc of this fraction of the body's short half-axis
    mark_rotation_deg: float = 15.0  # mark rotation drawn uniformly in +-this
    colour_jitter: float = 14.0  # std of the per-channel jitter of every colour (0-255 scale)
    clutter_count: Tuple[int, int] = (4, 9)  # inclusive range of background clutter elements (0, 0 = clean)
    clutter_size: Tuple[float, float] = (3.0, 14.0)  # radius range of clutter blobs / half length of strokes
    background_gradient: float = 60.0  # max brightness change across the background (0 = flat)
    noise_std: float = 5.0  # std of the pixel noise (0-255 scale)


# Where a pretraining image may differ from a benchmark image: large centred objects, big marks, clean backgrounds.
PRETRAIN_DOMAIN = SceneDomain(
    body_radius=(20.0, 26.0),
    centre_jitter=0.25,
    mark_radius=(5.0, 8.0),
    mark_offset=0.3,
    clutter_count=(0, 0),
    background_gradient=20.0,
    noise_std=2.0,
)
BENCHMARK_DOMAIN = SceneDomain()


@dataclass
class Scene:
    """Parameters of one image (all scalars)."""

    mark_colour: str
    mark_shape: str
    body_colour: str
    body_shape: str
    body_rgb: Tuple[float, float, float]
    mark_rgb: Tuple[float, float, float]
    background_rgb: Tuple[float, float, float]
    gradient: Tuple[float, float]  # brightness slope along x and y, per image side
    body_centre: Tuple[float, float]
    body_radius: float
    body_aspect: float
    body_angle: float
    mark_centre: Tuple[float, float]
    mark_radius: float
    mark_angle: float
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


def sample_scene(rng: np.random.Generator, domain: SceneDomain, mark_colour: str, mark_shape: str) -> Scene:
    """Draw the nuisance parameters of one image whose mark is ``mark_colour`` ``mark_shape``."""
    size = domain.image_size
    body_colour = BODY_COLOURS_NAMES[rng.integers(len(BODY_COLOURS_NAMES))]
    body_shape = BODY_SHAPES[rng.integers(len(BODY_SHAPES))]
    radius = rng.uniform(*domain.body_radius)
    aspect = rng.uniform(*domain.body_aspect)
    room = max(size / 2 - radius, 0.0) * domain.centre_jitter
    centre = (size / 2 + rng.uniform(-room, room), size / 2 + rng.uniform(-room, room))
    body_angle = np.deg2rad(rng.uniform(-domain.body_rotation_deg, domain.body_rotation_deg))
    # The mark sits inside the body: offset in the body's frame, within a disc of the short half-axis.
    offset_radius = domain.mark_offset * radius * aspect * np.sqrt(rng.uniform())
    offset_angle = rng.uniform(0, 2 * np.pi)
    mark_centre = (centre[0] + offset_radius * np.cos(offset_angle), centre[1] + offset_radius * np.sin(offset_angle))
    background = rng.uniform(40, 215, 3)
    gradient = tuple(float(g) for g in rng.uniform(-1, 1, 2) * domain.background_gradient / 2)
    clutter = []
    for _ in range(rng.integers(domain.clutter_count[0], domain.clutter_count[1] + 1)):
        kind = int(rng.integers(2))
        clutter.append(
            (
                kind,
                float(rng.uniform(0, size)),
                float(rng.uniform(0, size)),
                float(rng.uniform(*domain.clutter_size)),
                float(rng.uniform(0.3, 1.0) if kind == 0 else rng.uniform(0.08, 0.2)),
                float(rng.uniform(0, np.pi)),
                tuple(float(v) for v in rng.uniform(0, 255, 3)),
            )
        )
    return Scene(
        mark_colour=mark_colour,
        mark_shape=mark_shape,
        body_colour=body_colour,
        body_shape=body_shape,
        body_rgb=_jitter(rng, BODY_COLOURS[body_colour], domain.colour_jitter),
        mark_rgb=_jitter(rng, MARK_COLOURS[mark_colour], domain.colour_jitter),
        background_rgb=tuple(float(v) for v in background),
        gradient=gradient,
        body_centre=(float(centre[0]), float(centre[1])),
        body_radius=float(radius),
        body_aspect=float(aspect),
        body_angle=float(body_angle),
        mark_centre=(float(mark_centre[0]), float(mark_centre[1])),
        mark_radius=float(rng.uniform(*domain.mark_radius)),
        mark_angle=float(np.deg2rad(rng.uniform(-domain.mark_rotation_deg, domain.mark_rotation_deg))),
        clutter=clutter,
    )


BODY_COLOURS_NAMES = tuple(BODY_COLOURS)

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


def _star_distance(u, v, r, points: int = 5):
    sector = 2 * np.pi / points
    phi = np.arctan2(v, u) + np.pi / 2  # a tip points up (v < 0 is up)
    tipness = np.abs(2 * np.mod(phi, sector) / sector - 1)  # 1 at a tip, 0 at an inner corner
    boundary = r * (STAR_INNER + (STAR_OUTER - STAR_INNER) * tipness)
    return (np.hypot(u, v) - boundary) * 0.6  # edges are slanted: shrink the radial gap to a rough normal distance


def mark_distance(shape: str, u, v, r):
    if shape == "circle":
        return np.hypot(u, v) - r
    if shape == "square":
        return _box_distance(u, v, SQUARE_APOTHEM * r, SQUARE_APOTHEM * r)
    if shape == "triangle":  # flat base at the bottom: side normals at 90, 210, 330 degrees (v down)
        return _polygon_distance(u, v, TRIANGLE_APOTHEM * r, 3, np.pi / 2)
    if shape == "cross":
        half = CROSS_BAR_HALF_WIDTH * r
        return np.minimum(_box_distance(u, v, r, half), _box_distance(u, v, half, r))
    if shape == "star":
        return _star_distance(u, v, r)
    if shape == "diamond":
        return _polygon_distance(u, v, DIAMOND_APOTHEM * r, 4, np.pi / 4)
    raise ValueError(f"unknown mark shape {shape!r}; known: {sorted(MARK_SHAPES)}")


def body_distance(shape: str, u, v, r, aspect):
    if shape == "oval":  # distance in the stretched frame, scaled back: close to the true distance for aspect ~ 1
        return (np.hypot(u, v / aspect) - r) * aspect
    if shape == "block":
        return _box_distance(u, v, r, r * aspect)
    if shape == "hexagon":
        return _polygon_distance(u, v / aspect, HEXAGON_APOTHEM * r, 6, 0.0) * aspect
    raise ValueError(f"unknown body shape {shape!r}; known: {BODY_SHAPES}")


def _local(xs, ys, centre, angle):
    dx, dy = xs - centre[0], ys - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def _coverage(distance):
    """Anti-aliased coverage of a pixel by a shape: 1 inside, 0 outside, linear over one pixel at the edge."""
    return np.clip(0.5 - distance, 0.0, 1.0)[..., None]


def render_scene(scene: Scene, noise: np.ndarray, image_size: int) -> np.ndarray:
    """Render one scene to an (H, W, 3) uint8 array; ``noise`` is (H, W, 3) standard-normal times the noise std."""
    grid = np.arange(image_size, dtype=np.float64) + 0.5
    xs, ys = np.meshgrid(grid, grid)
    background = np.asarray(scene.background_rgb)
    shade = (xs - image_size / 2) / image_size * scene.gradient[0] + (ys - image_size / 2) / image_size * scene.gradient[1]
    image = background + shade[..., None]
    for kind, x, y, size, aspect, angle, rgb in scene.clutter:
        u, v = _local(xs, ys, (x, y), angle)
        distance = (np.hypot(u, v / aspect) - size) * aspect if kind == 0 else _box_distance(u, v, size, size * aspect)
        alpha = _coverage(distance)
        image = image * (1 - alpha) + np.asarray(rgb) * alpha
    u, v = _local(xs, ys, scene.body_centre, scene.body_angle)
    alpha = _coverage(body_distance(scene.body_shape, u, v, scene.body_radius, scene.body_aspect))
    image = image * (1 - alpha) + np.asarray(scene.body_rgb) * alpha
    u, v = _local(xs, ys, scene.mark_centre, scene.mark_angle)
    alpha = _coverage(mark_distance(scene.mark_shape, u, v, scene.mark_radius))
    image = image * (1 - alpha) + np.asarray(scene.mark_rgb) * alpha
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


def render(rng: np.random.Generator, domain: SceneDomain, mark_colour: str, mark_shape: str) -> Tuple[np.ndarray, Scene]:
    """Sample and render one image; returns (uint8 (H, W, 3) array, its scene)."""
    scene = sample_scene(rng, domain, mark_colour, mark_shape)
    noise = rng.standard_normal((domain.image_size, domain.image_size, 3)) * domain.noise_std
    return render_scene(scene, noise, domain.image_size), scene


def render_batch(rng: np.random.Generator, domain: SceneDomain, marks: Sequence[Tuple[str, str]]):
    """Render one image per (colour, shape) in ``marks``; returns ((B, H, W, 3) uint8, list of scenes)."""
    images, scenes = zip(*(render(rng, domain, colour, shape) for colour, shape in marks))
    return np.stack(images), list(scenes)
