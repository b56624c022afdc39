"""Drawing generated faces with OpenCV (the pictures of ``synthetic``).

A face is drawn in "face units" (fractions of the canvas side) through a
pose transform, at twice the output size with anti-aliased polygons, then
shrunk with ``INTER_AREA`` and given the image's photometric nuisances.
``synthetic`` decides *what* to draw (identity and nuisance parameters);
this module only draws it.
"""

import functools
import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
  from facejax.data import synthetic  # pylint: disable=g-bad-import-order

DEFAULT_IMAGE_SIZE = 64


def random_colour(rng, low=0, high=255):
  """A random RGB colour as floats, for OpenCV."""
  return tuple(float(c) for c in rng.uniform(low, high, 3))


def shade(colour, factor):
  return tuple(c * factor for c in colour)


def mix(a, b, t):
  return tuple(float(x * (1 - t) + y * t) for x, y in zip(a, b))


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
    colour = tuple(int(.45 * c + .55 * grey) for c in random_colour(rng))
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
            (-.38 * w, h + .14)], shade(p.skin, .85))
  if p.hair_style == 1:
    top = -h - p.hair_volume
    pen.fill([(-w - p.hair_volume, top + .1), (w + p.hair_volume, top + .1),
              (w + p.hair_volume + .02, h * .3 + p.hair_length),
              (-w - p.hair_volume - .02, h * .3 + p.hair_length)], p.hair)
  for side in (-1, 1):
    pen.fill(_ellipse(side * w * .97, p.eye_y + .04, p.ear_size * .6,
                      p.ear_size * 1.2), shade(p.skin, .92))
  contour = _face_contour(p)
  pen.fill(contour, p.skin)
  # Beard over the jaw below the mouth corners.
  if p.beard:
    jaw = contour[contour[:, 1] > p.mouth_y - .04]
    jaw = jaw[np.argsort(np.arctan2(jaw[:, 1], jaw[:, 0]))]
    if p.beard == 3:
      jaw = jaw[np.abs(jaw[:, 0]) < p.mouth_half_width * 1.1]
    colour = mix(p.skin, p.hair, .45 if p.beard == 1 else .9)
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
    pen.fill(_ellipse(x + dx, y, r, r, n=10), shade(p.skin, .45))


def _draw_eyes(pen, p, n, dx):
  brow_colour = mix(p.hair, (20, 15, 10), .35)
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
  nose_shade = shade(p.skin, .72)
  tip_x, tip_y = dx * 1.5, p.eye_y + p.nose_length + .02
  nw = p.nose_width
  if p.nose_style == 0:
    pen.line([(dx * .8 + nw * .3, p.eye_y + .01), (tip_x + nw * .4, tip_y),
              (tip_x - nw * .6, tip_y + .01)], nose_shade, .007)
  elif p.nose_style == 1:
    pen.fill([(dx * .8, p.eye_y + .02), (tip_x + nw, tip_y + .005),
              (tip_x - nw, tip_y + .005)], mix(p.skin, nose_shade, .6))
  else:
    for side in (-1, 1):
      pen.fill(_ellipse(tip_x + side * nw * .55, tip_y, nw * .3, nw * .18,
                        n=10), nose_shade)
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


def draw_face(identity: "synthetic.IdentityParams",
              nuisance: "synthetic.NuisanceParams",
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
                  (int(x + w / 2), int(y + h / 2)), random_colour(rng), -1)
  image = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA)
  image = _photometric(image, nuisance, rng)
  if apply_jpeg:
    image = cv2.imdecode(np.frombuffer(encode_jpeg(image, nuisance), np.uint8),
                         cv2.IMREAD_COLOR)[..., ::-1]
  return np.ascontiguousarray(image)


def encode_jpeg(image: np.ndarray,
                nuisance: "synthetic.NuisanceParams") -> bytes:
  """JPEG bytes of an RGB image at the image's nuisance quality."""
  ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                         [cv2.IMWRITE_JPEG_QUALITY, nuisance.jpeg_quality])
  if not ok:
    raise RuntimeError("OpenCV failed to encode a JPEG.")
  return buf.tobytes()
