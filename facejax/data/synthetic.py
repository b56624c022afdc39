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
import os
import shutil
import tempfile
import time

from absl import logging
import numpy as np

from facejax.data import face_drawing
from facejax.data.face_drawing import draw_face  # pylint: disable=unused-import
from facejax.data.face_drawing import encode_jpeg
from facejax.data.face_drawing import mix
from facejax.data.face_drawing import random_colour

# Set codes are part of every seed; never reuse or renumber them.
_SET_CODES = {"base": 1, "target": 2, "impostors": 3}
_SET_PREFIXES = {"base": "base", "target": "target", "impostors": "impostor"}
DEFAULT_NUM_IDENTITIES = {"base": 200, "target": 50, "impostors": 50}
DEFAULT_IMAGES_PER_IDENTITY = 60
DEFAULT_IMAGE_SIZE = face_drawing.DEFAULT_IMAGE_SIZE

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


def sample_identity(rng: np.random.Generator) -> IdentityParams:
  """Draws the fixed factors of one identity."""
  skin = mix((248, 214, 190), (92, 58, 40), rng.uniform() ** 1.3)
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
      iris=mix(iris, random_colour(rng), .15), iris_ratio=rng.uniform(.5, .8),
      brow_thickness=rng.uniform(.01, .028),
      brow_angle_deg=rng.uniform(-14, 14), brow_gap=rng.uniform(.035, .06),
      brow_length=eye_half_width * rng.uniform(1.0, 1.5),
      brow_arch=rng.uniform(0, .02),
      nose_length=rng.uniform(.08, .14), nose_width=rng.uniform(.025, .05),
      nose_style=int(rng.integers(_NOSE_STYLES)),
      mouth_y=rng.uniform(.13, .19), mouth_half_width=rng.uniform(.05, .09),
      lip_thickness=rng.uniform(.008, .02),
      lips=mix(skin, (170, 60, 70), rng.uniform(.25, .6)),
      hair=mix(hair, random_colour(rng), .12),
      hair_style=int(rng.integers(_HAIR_STYLES)),
      hairline=rng.uniform(.05, .13), hair_length=rng.uniform(.1, .45),
      hair_volume=rng.uniform(.02, .07),
      glasses=int(rng.choice(3, p=[.75, .125, .125])),
      glasses_frame=random_colour(rng, 0, 200),
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
      shirt=random_colour(rng), background_seed=int(rng.integers(2**31)),
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
