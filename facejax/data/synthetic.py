"""Generated faces: a seeded, embedded stand-in for VGG Face (thesis §2.2.1).

Every identity is a fixed draw of independent face factors (shape, skin,
eyes, brows, nose, mouth, hair, glasses, beard, moles) from its own seed;
every image of it re-draws the nuisances a face crop has in the wild: pose
(in-plane rotation, scale, translation, a horizontal squash for yaw),
expression, illumination gradient and colour cast, brightness and contrast,
occlusion, background clutter, blur, noise and JPEG quality 30–95. Faces are
drawn at twice the output size with anti-aliased polygons and shrunk with
``INTER_AREA``. Factors take a few values each or continuous ranges, so
identities share some factors and differ in others.

Three identity sets play the thesis's roles: ``base`` (VGG Face's 2,622
identities, which the trunk is pre-trained on), ``target`` (the new
identities transfer learning adds, §3.1) and ``impostors`` (faces never
trained on, §3.4). Identity seeds are ``(seed, set code, index)``, so the
sets are disjoint by construction, and folder names carry the set
(``base_0000``, ``target_0000``, ``impostor_0000``).

``write_identity_set`` writes ``<root>/<identity>/<image>.jpg``, the layout
of a user's cropped real data, into a temporary directory that is renamed
to ``root`` only when complete.
"""

import dataclasses
import functools
import math
import os
import shutil
import tempfile
import time

from absl import logging
import cv2
import numpy as np

# Set codes are part of every seed; never reuse or renumber them.
_SET_CODES = {"base": 1, "target": 2, "impostors": 3}
_SET_PREFIXES = {"base": "base", "target": "target", "impostors": "impostor"}
DEFAULT_NUM_IDENTITIES = {"base": 200, "target": 50, "impostors": 50}
DEFAULT_IMAGES_PER_IDENTITY = 60
DEFAULT_IMAGE_SIZE = 64

_HAIR_STYLES = 5  # short, long, receding, fringe, side parting.
_NOSE_STYLES = 3  # bridge line, shadow, nostrils.
_BEARDS = 4  # none, stubble, full, goatee.


@dataclasses.dataclass(frozen=True)
class IdentityParams:
  """Fixed factors of one identity; lengths in units of the canvas side."""
  face_half_width: float
  face_half_height: float
  jaw: float  # 0 round, 1 square.
  chin: float  # 0 flat, 1 pointed.
  skin: tuple[float, float, float]
  ear_size: float
  eye_spacing: float
  eye_y: float
  eye_half_width: float
  eye_aspect: float
  eye_tilt_deg: float
  iris: tuple[float, float, float]
  iris_ratio: float
  brow_thickness: float
  brow_angle_deg: float
  brow_gap: float
  brow_length: float
  brow_arch: float
  nose_length: float
  nose_width: float
  nose_style: int
  mouth_y: float
  mouth_half_width: float
  lip_thickness: float
  lips: tuple[float, float, float]
  hair: tuple[float, float, float]
  hair_style: int
  hairline: float
  hair_length: float
  hair_volume: float
  glasses: int  # 0 none, 1 round, 2 rectangular.
  glasses_frame: tuple[float, float, float]
  beard: int
  moustache: bool
  moles: tuple[tuple[float, float, float], ...]


@dataclasses.dataclass(frozen=True)
class NuisanceParams:
  """Per-image nuisances."""
  angle_deg: float
  scale: float
  shift: tuple[float, float]
  yaw: float  # -1 … 1; squashes the face and slides the features.
  mouth_open: float
  smile: float
  eye_open: float
  brow_raise: float
  gaze: float
  shirt: tuple[float, float, float]
  background_seed: int
  occlusion: bool
  light_angle: float
  light_strength: float
  colour_cast: tuple[float, float, float]
  brightness: float
  contrast: float
  blur_sigma: float
  noise_sigma: float
  jpeg_quality: int


def _colour(rng, low=0, high=255):
  return tuple(float(c) for c in rng.uniform(low, high, 3))


def _shade(colour, factor):
  return tuple(c * factor for c in colour)


def _mix(a, b, t):
  return tuple(float(x * (1 - t) + y * t) for x, y in zip(a, b))


def sample_identity(rng: np.random.Generator) -> IdentityParams:
  """Draws the fixed factors of one identity."""
  skin = _mix((248, 214, 190), (92, 58, 40), rng.uniform() ** 1.3)
  tint = rng.uniform(.92, 1.08, 3)
  skin = tuple(min(255.0, c * g) for c, g in zip(skin, tint))
  iris = [(95, 60, 30), (60, 110, 170), (80, 130, 80), (120, 120, 130),
          (40, 25, 15)][rng.integers(5)]
  hair = [(25, 20, 18), (90, 60, 35), (200, 170, 110), (150, 70, 30),
          (170, 170, 170), (55, 35, 25)][rng.integers(6)]
  moles = tuple((float(rng.uniform(-.18, .18)), float(rng.uniform(-.05, .25)),
                 float(rng.uniform(.006, .012)))
                for _ in range(rng.choice(3, p=[.6, .3, .1])))
  eye_half_width = rng.uniform(.04, .06)
  return IdentityParams(
      face_half_width=rng.uniform(.2, .26),
      face_half_height=rng.uniform(.27, .33),
      jaw=rng.uniform(), chin=rng.uniform(),
      skin=skin, ear_size=rng.uniform(.03, .055),
      eye_spacing=rng.uniform(.08, .115), eye_y=rng.uniform(-.06, -.01),
      eye_half_width=eye_half_width, eye_aspect=rng.uniform(.35, .6),
      eye_tilt_deg=rng.uniform(-10, 10),
      iris=_mix(iris, _colour(rng), .15), iris_ratio=rng.uniform(.5, .8),
      brow_thickness=rng.uniform(.01, .028),
      brow_angle_deg=rng.uniform(-14, 14), brow_gap=rng.uniform(.035, .06),
      brow_length=eye_half_width * rng.uniform(1.0, 1.5),
      brow_arch=rng.uniform(0, .02),
      nose_length=rng.uniform(.08, .14), nose_width=rng.uniform(.025, .05),
      nose_style=int(rng.integers(_NOSE_STYLES)),
      mouth_y=rng.uniform(.13, .19), mouth_half_width=rng.uniform(.05, .09),
      lip_thickness=rng.uniform(.008, .02),
      lips=_mix(skin, (170, 60, 70), rng.uniform(.25, .6)),
      hair=_mix(hair, _colour(rng), .12),
      hair_style=int(rng.integers(_HAIR_STYLES)),
      hairline=rng.uniform(.05, .13), hair_length=rng.uniform(.1, .45),
      hair_volume=rng.uniform(.02, .07),
      glasses=int(rng.choice(3, p=[.75, .125, .125])),
      glasses_frame=_colour(rng, 0, 200),
      beard=int(rng.choice(_BEARDS, p=[.7, .1, .1, .1])),
      moustache=bool(rng.uniform() < .15), moles=moles)


def sample_nuisance(rng: np.random.Generator) -> NuisanceParams:
  """Draws the nuisances of one image."""
  return NuisanceParams(
      angle_deg=rng.normal(0, 7), scale=rng.uniform(1.0, 1.3),
      shift=(float(rng.uniform(-.06, .06)), float(rng.uniform(-.06, .06))),
      yaw=rng.uniform(-1, 1),
      mouth_open=max(0.0, rng.uniform(-.6, 1)), smile=rng.uniform(-.4, 1),
      eye_open=1.0 if rng.uniform() < .85 else rng.uniform(.1, .8),
      brow_raise=rng.uniform(-.01, .025), gaze=rng.uniform(-.25, .25),
      shirt=_colour(rng), background_seed=int(rng.integers(2**31)),
      occlusion=bool(rng.uniform() < .3),
      light_angle=rng.uniform(0, 2 * np.pi), light_strength=rng.uniform(0, .5),
      colour_cast=tuple(float(g) for g in rng.uniform(.85, 1.15, 3)),
      brightness=rng.uniform(-35, 35), contrast=rng.uniform(.65, 1.3),
      blur_sigma=rng.uniform(0, 1.2) if rng.uniform() < .5 else 0.0,
      noise_sigma=rng.uniform(0, 10), jpeg_quality=int(rng.integers(30, 96)))


def identity_name(set_name: str, index: int) -> str:
  """Folder name of an identity, unique across the sets."""
  _check_set(set_name)
  return f"{_SET_PREFIXES[set_name]}_{index:04d}"


def identity_seed(set_name: str, index: int, seed: int) -> tuple[int, ...]:
  """Seed words of an identity: distinct for every (seed, set, index)."""
  _check_set(set_name)
  # A trailing tag keeps sequences free of trailing zeros, which
  # np.random.SeedSequence would otherwise treat as equal ([1] == [1, 0]).
  return (seed, _SET_CODES[set_name], index, 1)


def identity_params(set_name: str, index: int, seed: int = 0) -> IdentityParams:
  return sample_identity(
      np.random.default_rng(identity_seed(set_name, index, seed)))


def nuisance_params(set_name: str, index: int, image_index: int,
                    seed: int = 0) -> NuisanceParams:
  words = identity_seed(set_name, index, seed)[:3] + (2, image_index + 1)
  return sample_nuisance(np.random.default_rng(words))


def _check_set(set_name):
  if set_name not in _SET_CODES:
    raise ValueError(f"Unknown identity set {set_name!r}; expected one of "
                     f"{sorted(_SET_CODES)}.")


class _Pen:
  """Draws polygons given in face units through the pose transform."""

  def __init__(self, canvas, matrix, px_per_unit):
    self.canvas, self.matrix, self.px_per_unit = canvas, matrix, px_per_unit

  def _points(self, pts):
    pts = np.asarray(pts, np.float64) @ self.matrix[:, :2].T + self.matrix[:, 2]
    return [np.round(pts * 16).astype(np.int32)]  # 4 fractional bits.

  def fill(self, pts, colour):
    cv2.fillPoly(self.canvas, self._points(pts), colour, cv2.LINE_AA, 4)

  def line(self, pts, colour, thickness, closed=False):
    px = max(1, int(round(thickness * self.px_per_unit)))
    cv2.polylines(self.canvas, self._points(pts), closed, colour, px,
                  cv2.LINE_AA, 4)


@functools.lru_cache(maxsize=64)
def _unit_arc(t0, t1, n):
  t = np.linspace(t0, t1, n)
  return np.cos(t), np.sin(t)


def _ellipse(cx, cy, a, b, angle_deg=0.0, t0=0.0, t1=2 * np.pi, n=28):
  cos_t, sin_t = _unit_arc(t0, t1, n)
  x, y = a * cos_t, b * sin_t
  c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
  return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _face_contour(p, n=40):
  """Face outline: an ellipse whose lower half squares off and narrows."""
  t = np.linspace(0, 2 * np.pi, n, endpoint=False)
  x, y = np.cos(t), np.sin(t)
  lower = np.clip(y, 0, 1)  # y grows downwards: sin(t) > 0 is the jaw.
  x = x * (1 + p.jaw * .25 * np.sin(np.pi * lower) - p.chin * .45 * lower ** 3)
  x = np.sign(x) * np.abs(x) ** (1 - .3 * p.jaw * lower)
  return np.stack([x * p.face_half_width, y * p.face_half_height], 1)


def _background(rng, side):
  # Muted like the walls and rooms behind real face crops: random colours
  # pulled halfway to a random grey, so clutter varies but does not
  # dominate the pixel statistics the way saturated noise would.
  grey = rng.uniform(50, 200)
  base = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
  base = .45 * base + .55 * grey
  canvas = cv2.resize(base, (side, side), interpolation=cv2.INTER_CUBIC)
  canvas = np.clip(canvas, 0, 255).astype(np.uint8)
  for _ in range(rng.integers(3, 9)):
    colour = tuple(int(.45 * c + .55 * grey) for c in _colour(rng))
    x, y = (int(v) for v in rng.integers(0, side, 2))
    r = int(rng.integers(side // 16, side // 3))
    kind = rng.integers(3)
    if kind == 0:
      cv2.circle(canvas, (x, y), r, colour, -1, cv2.LINE_AA)
    elif kind == 1:
      cv2.rectangle(canvas, (x - r, y - r // 2), (x + r, y + r), colour, -1)
    else:
      x2, y2 = (int(v) for v in rng.integers(0, side, 2))
      cv2.line(canvas, (x, y), (x2, y2), colour, max(1, r // 6), cv2.LINE_AA)
  return canvas


def _pose_matrix(n, side):
  """Face units → canvas pixels: rotation, scale, shift, yaw squash."""
  a = math.radians(n.angle_deg)
  sx = n.scale * (1 - .18 * abs(n.yaw)) * side
  sy = n.scale * side
  c, s = math.cos(a), math.sin(a)
  cx, cy = (.5 + n.shift[0]) * side, (.5 + n.shift[1]) * side
  return np.array([[c * sx, -s * sy, cx], [s * sx, c * sy, cy]]), sy


def _draw_head(pen, p, n):
  w, h = p.face_half_width, p.face_half_height
  # Shoulders, neck, long hair behind the head, ears, face.
  pen.fill(_ellipse(0, h + .32, .42, .22), n.shirt)
  pen.fill([(-.33 * w, 0), (.33 * w, 0), (.38 * w, h + .14),
            (-.38 * w, h + .14)], _shade(p.skin, .85))
  if p.hair_style == 1:
    top = -h - p.hair_volume
    pen.fill([(-w - p.hair_volume, top + .1), (w + p.hair_volume, top + .1),
              (w + p.hair_volume + .02, h * .3 + p.hair_length),
              (-w - p.hair_volume - .02, h * .3 + p.hair_length)], p.hair)
  for side in (-1, 1):
    pen.fill(_ellipse(side * w * .97, p.eye_y + .04, p.ear_size * .6,
                      p.ear_size * 1.2), _shade(p.skin, .92))
  contour = _face_contour(p)
  pen.fill(contour, p.skin)
  # Beard over the jaw below the mouth corners.
  if p.beard:
    jaw = contour[contour[:, 1] > p.mouth_y - .04]
    jaw = jaw[np.argsort(np.arctan2(jaw[:, 1], jaw[:, 0]))]
    if p.beard == 3:
      jaw = jaw[np.abs(jaw[:, 0]) < p.mouth_half_width * 1.1]
    colour = _mix(p.skin, p.hair, .45 if p.beard == 1 else .9)
    pen.fill(np.concatenate([jaw, [(-p.mouth_half_width * 1.2,
                                    p.mouth_y - .03),
                                   (p.mouth_half_width * 1.2,
                                    p.mouth_y - .03)]]), colour)
  dx = n.yaw * .03  # Inner features slide towards the turned side.
  _draw_eyes(pen, p, n, dx)
  _draw_nose_mouth(pen, p, n, dx)
  _draw_hair(pen, p)
  if p.glasses:
    for side in (-1, 1):
      cx = dx + side * p.eye_spacing
      if p.glasses == 1:
        pts = _ellipse(cx, p.eye_y, p.eye_half_width * 1.5,
                       p.eye_half_width * 1.2)
      else:
        a, b = p.eye_half_width * 1.6, p.eye_half_width * 1.05
        pts = [(cx - a, p.eye_y - b), (cx + a, p.eye_y - b),
               (cx + a, p.eye_y + b), (cx - a, p.eye_y + b)]
      pen.line(pts, p.glasses_frame, .008, closed=True)
    inner = p.eye_spacing - p.eye_half_width * 1.5
    pen.line([(dx - inner, p.eye_y), (dx + inner, p.eye_y)],
             p.glasses_frame, .008)
  for x, y, r in p.moles:
    pen.fill(_ellipse(x + dx, y, r, r, n=10), _shade(p.skin, .45))


def _draw_eyes(pen, p, n, dx):
  brow_colour = _mix(p.hair, (20, 15, 10), .35)
  for side in (-1, 1):
    cx, cy = dx + side * p.eye_spacing, p.eye_y
    a = p.eye_half_width
    b = a * p.eye_aspect * n.eye_open
    tilt = -side * p.eye_tilt_deg
    pen.fill(_ellipse(cx, cy, a, b, tilt), (240, 238, 232))
    r = a * p.eye_aspect * p.iris_ratio
    gx = cx + n.gaze * a * .5
    pen.fill(_ellipse(gx, cy, r, min(r, b), n=16), p.iris)
    pen.fill(_ellipse(gx, cy, r * .45, min(r * .45, b), n=12), (15, 12, 12))
    pen.line(_ellipse(cx, cy, a, b, tilt, np.pi, 2 * np.pi, 12),
             (40, 30, 30), .006)
    # Brow: inner end near the nose, angled and arched (tilt is per side).
    by = cy - b - p.brow_gap - n.brow_raise
    t = np.linspace(-1, 1, 9)
    bx = cx + side * t * p.brow_length
    slope = math.tan(math.radians(p.brow_angle_deg))
    bys = by - p.brow_arch * (1 - t ** 2) - slope * t * p.brow_length
    pen.line(np.stack([bx, bys], 1), brow_colour, p.brow_thickness)


def _draw_nose_mouth(pen, p, n, dx):
  shade = _shade(p.skin, .72)
  tip_x, tip_y = dx * 1.5, p.eye_y + p.nose_length + .02
  nw = p.nose_width
  if p.nose_style == 0:
    pen.line([(dx * .8 + nw * .3, p.eye_y + .01), (tip_x + nw * .4, tip_y),
              (tip_x - nw * .6, tip_y + .01)], shade, .007)
  elif p.nose_style == 1:
    pen.fill([(dx * .8, p.eye_y + .02), (tip_x + nw, tip_y + .005),
              (tip_x - nw, tip_y + .005)], _mix(p.skin, shade, .6))
  else:
    for side in (-1, 1):
      pen.fill(_ellipse(tip_x + side * nw * .55, tip_y, nw * .3, nw * .18,
                        n=10), shade)
  # Mouth: corners rise with the smile; opening shows a dark gap.
  w = p.mouth_half_width * (1 + .15 * n.smile)
  x = np.linspace(-w, w, 13)
  y = p.mouth_y + .02 * n.smile * (1 - (x / w) ** 2)
  upper = np.stack([dx + x, y], 1)
  lower = np.stack([dx + x, y + n.mouth_open * .035 * (1 - (x / w) ** 2)], 1)
  if n.mouth_open > .05:
    pen.fill(np.concatenate([upper, lower[::-1]]), (70, 20, 25))
  pen.line(upper, p.lips, p.lip_thickness)
  pen.line(lower + [0, p.lip_thickness * .6], p.lips, p.lip_thickness * 1.3)
  if p.moustache:
    pen.line(upper - [0, p.lip_thickness + .012], p.hair, .016)


def _draw_hair(pen, p):
  w, h, v = p.face_half_width, p.face_half_height, p.hair_volume
  if p.hair_style == 2 and p.hairline > .09:  # Bald: only the temples.
    for side in (-1, 1):
      pen.fill(_ellipse(side * w * .95, -h * .25, .02 + v * .5, .08), p.hair)
    return
  top = _ellipse(0, -v * .5, w + v, h + v, 0, np.pi * .92, np.pi * 2.08, 30)
  xs = np.linspace(1, -1, 15)
  line_y = -h + p.hairline + .04 * xs ** 2  # Hairline at the temples.
  if p.hair_style == 3:  # Fringe: low and straight.
    line_y = np.full_like(xs, -h + p.hairline + .06)
  elif p.hair_style == 4:  # Side parting: slanted.
    line_y = -h + p.hairline + .03 * (xs + 1)
  elif p.hair_style == 2:  # Receding: M-shaped.
    line_y = -h + p.hairline + .05 * np.abs(np.sin(np.pi * xs))
  hairline = np.stack([xs * w * 1.02, line_y], 1)
  pen.fill(np.concatenate([top, hairline]), p.hair)


def _photometric(image, n, rng):
  """Illumination, colour cast, contrast, blur and noise at output size."""
  side = image.shape[0]
  img = image.astype(np.float32)
  ramp = np.linspace(-1, 1, side, dtype=np.float32)
  light = (math.cos(n.light_angle) * ramp[None, :]
           + math.sin(n.light_angle) * ramp[:, None])
  img *= (1 + n.light_strength * light)[..., None]
  img *= np.asarray(n.colour_cast, np.float32)
  img = (img - 128) * n.contrast + 128 + n.brightness
  if n.blur_sigma > 0:
    img = cv2.GaussianBlur(img, (0, 0), n.blur_sigma * side / 64)
  img += rng.normal(0, n.noise_sigma, img.shape).astype(np.float32)
  return np.clip(img + .5, 0, 255).astype(np.uint8)


def draw_face(identity: IdentityParams, nuisance: NuisanceParams,
              size: int = DEFAULT_IMAGE_SIZE, *,
              apply_jpeg: bool = False) -> np.ndarray:
  """Draws one face crop.

  Args:
    identity: the identity's fixed factors.
    nuisance: the image's nuisances.
    size: output height and width in pixels.
    apply_jpeg: round-trips through JPEG at ``nuisance.jpeg_quality``, as
      the images written by ``write_identity_set`` are.

  Returns:
    uint8 RGB image of shape (size, size, 3).
  """
  if size < 8:
    raise ValueError(f"Image size must be at least 8 pixels, got {size}.")
  side = 2 * size  # Drawn at twice the size, then shrunk: anti-aliasing.
  rng = np.random.default_rng(nuisance.background_seed)
  canvas = _background(rng, side)
  matrix, px_per_unit = _pose_matrix(nuisance, side)
  _draw_head(_Pen(canvas, matrix, px_per_unit), identity, nuisance)
  if nuisance.occlusion:
    x, y = rng.uniform(0, side, 2)
    w, h = rng.uniform(.12, .4, 2) * side
    if rng.uniform() < .5:
      h = side * rng.uniform(.05, .1)  # A bar across the face.
    cv2.rectangle(canvas, (int(x - w / 2), int(y - h / 2)),
                  (int(x + w / 2), int(y + h / 2)), _colour(rng), -1)
  image = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
  image = _photometric(image, nuisance, rng)
  if apply_jpeg:
    image = cv2.imdecode(np.frombuffer(encode_jpeg(image, nuisance), np.uint8),
                         cv2.IMREAD_COLOR)[..., ::-1]
  return np.ascontiguousarray(image)


def encode_jpeg(image: np.ndarray, nuisance: NuisanceParams) -> bytes:
  """JPEG bytes of an RGB image at the image's nuisance quality."""
  ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                         [cv2.IMWRITE_JPEG_QUALITY, nuisance.jpeg_quality])
  if not ok:
    raise RuntimeError("OpenCV failed to encode a JPEG.")
  return buf.tobytes()


def write_identity_set(root: str, set_name: str,
                       num_identities: int | None = None,
                       images_per_identity: int = DEFAULT_IMAGES_PER_IDENTITY,
                       image_size: int = DEFAULT_IMAGE_SIZE,
                       seed: int = 0) -> int:
  """Writes ``<root>/<identity>/<image>.jpg`` for one identity set.

  The set is written into a temporary directory beside ``root`` and renamed
  to ``root`` when complete, so a half-written ``root`` never exists.

  Args:
    root: directory to create; must not exist yet.
    set_name: ``base``, ``target`` or ``impostors``.
    num_identities: identities to write (default per set: 200, 50, 50).
    images_per_identity: images per identity.
    image_size: side of the square images in pixels.
    seed: dataset seed; identities differ across seeds and sets.

  Returns:
    The number of images written.
  """
  _check_set(set_name)
  if num_identities is None:
    num_identities = DEFAULT_NUM_IDENTITIES[set_name]
  if num_identities < 1 or images_per_identity < 1:
    raise ValueError("num_identities and images_per_identity must be "
                     f"positive, got {num_identities}, {images_per_identity}.")
  root = os.path.abspath(root)
  if os.path.exists(root):
    raise FileExistsError(f"Dataset root {root} already exists; remove it or "
                          "choose another path.")
  parent = os.path.dirname(root)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.tmp-", dir=parent)
  start = time.monotonic()
  try:
    for i in range(num_identities):
      identity = identity_params(set_name, i, seed)
      folder = os.path.join(tmp, identity_name(set_name, i))
      os.mkdir(folder)
      for j in range(images_per_identity):
        nuisance = nuisance_params(set_name, i, j, seed)
        data = encode_jpeg(draw_face(identity, nuisance, image_size), nuisance)
        with open(os.path.join(folder, f"{j:04d}.jpg"), "wb") as f:
          f.write(data)
    try:
      os.rename(tmp, root)
    except OSError as e:  # Another writer renamed its copy first.
      if os.path.exists(root):
        raise FileExistsError(f"Dataset root {root} appeared while writing; "
                              "another process wrote it.") from e
      raise
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  count = num_identities * images_per_identity
  logging.info("Wrote %d %s images (%d identities, %dx%d) to %s in %.1f s.",
               count, set_name, num_identities, image_size, image_size, root,
               time.monotonic() - start)
  return count
