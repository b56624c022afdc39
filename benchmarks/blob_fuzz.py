"""Fuzzes blob loading with default options and tables what each mutant did.

  python benchmarks/blob_fuzz.py [--cases 5000] [--seed 0]
      [--package-root DIR] [--out-dir /tmp/facejax_blob_fuzz]

Builds a small version-1 VGG blob (width 0.0625, 32×32, 3 classes, fc
pruned to 10 %) and a small version-2 ResNet blob (dlib's, width 0.0625,
one CSR conv), then opens ``--cases`` seeded mutants of each with
``open_blob(path)`` (default options, as the demo does) and runs the
accepted ones on a fixed image. Mutations: truncations, single and
multiple bit flips anywhere, bit flips in the header and manifest, JSON
edits (wrong types, class names, colour_order, shapes and sizes, other
numbers) written back both in place (same length, as a byte editor would)
and re-serialised (``json.dumps``, as a Python script would). Outcomes:

  clean error     ``BlobError`` at load
  other exception anything else at load, or at run
  wrong output    loaded, and the output or the metadata a caller acts on
                  (class names, colour order, input size) differs from the
                  unmodified blob's; non-finite outputs counted apart
  same output     loaded and harmless (e.g. a flip in padding)

``--package-root`` puts an older checkout first on ``sys.path`` (e.g.
``git archive REV facejax | tar -x -C DIR``), so the same cases measure
the code before a fix; its writer builds the blobs too.
"""

import argparse
import collections
import json
import os
import signal
import sys
import warnings

import numpy as np

OUTCOMES = ("clean error", "other exception", "wrong output",
            "wrong, non-finite", "same output")
_WRONG_TYPES = (None, True, False, 0, -1, 2.5, 10 ** 30, "", "x", [],
                [1, "a"], {}, {"a": 1})
_INFORMATIONAL = ("model", "pruning", "export")
_CASE_SECONDS = 20


def build_blobs(out_dir):
  """The two unmodified blobs: {name: path}."""
  # pylint: disable=g-import-not-at-top
  from facejax.export import exporter
  from facejax.export import graph_export
  from facejax.export import synthetic
  from facejax.models import dlib_resnet
  # pylint: enable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  vgg = os.path.join(out_dir, "vgg.fjx")
  params = synthetic.random_params(3, width=0.0625, fc_width=16,
                                   input_size=32, seed=3)
  masks = synthetic.prune_magnitude(params, 0.1)
  exporter.export_model(vgg, params, masks=masks,
                        mean_image=np.full((32, 32, 3), 100, np.float32),
                        class_names=["alice", "bob", "carol"])
  resnet = os.path.join(out_dir, "resnet.fjx")
  params = synthetic.random_dlib_resnet_params(width=0.0625, seed=5)
  conv = params["stage2"]["block1"]["conv1"]
  conv["kernel"][np.abs(conv["kernel"]) < 0.3] = 0  # A CSR conv.
  graph_export.export_graph(resnet, dlib_resnet.lower(params))
  return {"v1 VGG": vgg, "v2 ResNet": resnet}


def _split(data):
  manifest_len = int.from_bytes(data[16:24], "little")
  payload = int.from_bytes(data[24:32], "little")
  return data[32:32 + manifest_len], payload


def _assemble(data, text):
  """``data`` around new manifest bytes, header lengths fixed up."""
  _, payload = _split(data)
  offset = -(-(32 + len(text)) // 64) * 64
  head = (data[:16] + len(text).to_bytes(8, "little")
          + offset.to_bytes(8, "little"))
  return head + text + b"\0" * (offset - 32 - len(text)) + data[payload:]


def _fields(node, prefix=()):
  items = node.items() if isinstance(node, dict) else enumerate(node)
  for key, value in items:
    if not prefix and key in _INFORMATIONAL:
      continue
    yield prefix + (key,), value
    if isinstance(value, (dict, list)):
      yield from _fields(value, prefix + (key,))


def _set(manifest, path, value):
  node = manifest
  for key in path[:-1]:
    node = node[key]
  node[path[-1]] = value


def _flip(data, rng, low, high, count=1):
  mutant = bytearray(data)
  for pos in rng.integers(low, high, count):
    mutant[pos] ^= 1 << int(rng.integers(8))
  return bytes(mutant)


def _json_edit(data, rng, edit):
  """A manifest edit, written in place when lengths allow, else dumped."""
  text, _ = _split(data)
  manifest = json.loads(text)
  fields = list(_fields(manifest))
  if edit == "wrong type":
    path, original = fields[int(rng.integers(len(fields)))]
    values = [v for v in _WRONG_TYPES if type(v) is not type(original)]
    _set(manifest, path, values[int(rng.integers(len(values)))])
  elif edit == "class names":
    classes = manifest.get("classes") or manifest["output"].setdefault(
        "classes", [])
    if classes and rng.uniform() < 0.5:
      i, j = rng.choice(len(classes), 2, replace=False)
      classes[i], classes[j] = classes[j], classes[i]
    elif classes:
      name = classes[int(rng.integers(len(classes)))]
      classes[classes.index(name)] = name[::-1].capitalize()
    else:  # An embedding network: claim logits with made-up names.
      manifest["output"]["kind"] = "logits"
      classes.extend(f"p{i}" for i in range(manifest["output"]["size"]))
  elif edit == "colour_order":
    inp = manifest["input"]
    inp["colour_order"] = {"RGB": "BGR", "BGR": "RGB"}[inp["colour_order"]]
  elif edit == "shape":
    ints = [(p, v) for p, v in fields
            if isinstance(v, int) and not isinstance(v, bool)
            and p[-1] not in ("crc32", "offset", "nbytes")]
    path, value = ints[int(rng.integers(len(ints)))]
    _set(manifest, path, max(0, value + int(rng.choice([-2, -1, 1, 2]))))
  else:  # "numbers": offsets, sizes, CRCs, the input scale.
    ints = [(p, v) for p, v in fields if isinstance(v, (int, float))
            and not isinstance(v, bool)]
    path, value = ints[int(rng.integers(len(ints)))]
    _set(manifest, path, type(value)(value * 2 if value else 1))
  compact = json.dumps(manifest, separators=(",", ":")).encode()
  if len(compact) == len(text) and rng.uniform() < 0.5:
    return data[:32] + compact + data[32 + len(text):]  # In place.
  return _assemble(data, json.dumps(manifest).encode())


KINDS = (  # (name, weight)
    ("truncation", 8), ("flip anywhere", 20), ("flip in manifest", 20),
    ("flips x2-16", 7), ("wrong type", 15), ("class names", 6),
    ("colour_order", 6), ("shape", 10), ("numbers", 8))


def mutate(data, rng, kind):
  """One mutant of ``data``."""
  _, payload = _split(data)
  if kind == "truncation":
    cut = int(rng.integers(0, len(data)))
    return data[:cut] if rng.uniform() < 0.9 else data + b"\0" * cut
  if kind == "flip anywhere":
    return _flip(data, rng, 0, len(data))
  if kind == "flip in manifest":
    return _flip(data, rng, 0, payload)
  if kind == "flips x2-16":
    return _flip(data, rng, 0, len(data), int(rng.integers(2, 17)))
  return _json_edit(data, rng, kind)


class _Timeout(Exception):
  pass


def _alarm(signum, frame):
  del signum, frame
  raise _Timeout()


def _answer(blob_lib, graph_network, path, images):
  """(output, metadata) of a blob opened with default options."""
  blob = blob_lib.open_blob(path)
  try:
    meta = (blob.class_names, blob.manifest["input"]["colour_order"],
            blob.input_size)
    if blob.input_size not in images:  # A size edit: new shape, new image.
      images[blob.input_size] = np.random.default_rng(9).uniform(
          0, 255, (1,) + blob.input_size + (3,)).astype(np.float32)
    executor = graph_network.make_executor(blob, threads=1)
    out = executor.predict(images[blob.input_size]) if blob.class_names \
        else executor.embed(images[blob.input_size])
    executor.close()
    return np.asarray(out), meta
  finally:
    blob.close()


def run(paths, cases, seed, out_dir):
  """Fuzzes each blob; returns {blob: {kind: Counter(outcome)}}."""
  # pylint: disable=g-import-not-at-top
  from facejax.executor import blob as blob_lib
  from facejax.executor import graph_network
  # pylint: enable=g-import-not-at-top
  signal.signal(signal.SIGALRM, _alarm)
  warnings.simplefilter("ignore")  # Unprotected older manifests warn.
  names, weights = zip(*KINDS)
  weights = np.asarray(weights, float) / sum(weights)
  table, examples = {}, collections.defaultdict(list)
  mutant_path = os.path.join(out_dir, "mutant.fjx")
  for index, (name, path) in enumerate(paths.items()):
    with open(path, "rb") as f:
      data = f.read()
    images = {}
    ref_out, ref_meta = _answer(blob_lib, graph_network, path, images)
    rng = np.random.default_rng([seed, index])
    counts = table[name] = collections.defaultdict(collections.Counter)
    for _ in range(cases):
      kind = names[int(rng.choice(len(names), p=weights))]
      mutant = mutate(data, rng, kind)
      with open(mutant_path, "wb") as f:
        f.write(mutant)
      signal.alarm(_CASE_SECONDS)
      try:
        out, meta = _answer(blob_lib, graph_network, mutant_path, images)
        if not np.isfinite(out).all():
          outcome = "wrong, non-finite"
        elif meta != ref_meta or not np.array_equal(out, ref_out):
          outcome = "wrong output"
        else:
          outcome = "same output"
      except blob_lib.BlobError:
        outcome = "clean error"
      except Exception as e:  # pylint: disable=broad-except
        outcome = "other exception"
        examples[(name, kind)].append(f"{type(e).__name__}: {e}"[:160])
      finally:
        signal.alarm(0)
      counts[kind][outcome] += 1
  return table, examples


def print_table(table):
  width = max(len(k) for k, _ in KINDS) + 2
  head = f"{'':{width}}" + "".join(f"{o:>18}" for o in OUTCOMES) + \
      f"{'cases':>8}"
  totals = collections.Counter()
  for name, counts in table.items():
    print(f"\n{name}\n{head}")
    blob_totals = collections.Counter()
    for kind, _ in KINDS:
      row = counts.get(kind, collections.Counter())
      blob_totals.update(row)
      print(f"{kind:{width}}" + "".join(f"{row[o]:>18,d}" for o in OUTCOMES)
            + f"{sum(row.values()):>8,d}")
    print(f"{'all':{width}}" + "".join(f"{blob_totals[o]:>18,d}"
                                       for o in OUTCOMES)
          + f"{sum(blob_totals.values()):>8,d}")
    totals.update(blob_totals)
  print(f"\nboth blobs{'':{width - 10}}" + "".join(
      f"{totals[o]:>18,d}" for o in OUTCOMES) +
        f"{sum(totals.values()):>8,d}")
  return totals


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--cases", type=int, default=5000,
                      help="mutants per blob (default 5000, two blobs)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--package-root", default=None,
                      help="import facejax from here (an older checkout)")
  parser.add_argument("--out-dir", default="/tmp/facejax_blob_fuzz")
  args = parser.parse_args(argv)
  os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
  if args.package_root:
    sys.path.insert(0, os.path.abspath(args.package_root))
  else:
    sys.path.insert(0, os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
  import facejax  # pylint: disable=g-import-not-at-top
  print(f"facejax from {os.path.dirname(facejax.__file__)}, "
        f"{args.cases:,d} cases per blob, seed {args.seed}")
  paths = build_blobs(args.out_dir)
  table, examples = run(paths, args.cases, args.seed, args.out_dir)
  totals = print_table(table)
  for (name, kind), messages in sorted(examples.items()):
    print(f"other exceptions, {name} / {kind}: {len(messages)}, e.g. "
          + "; ".join(sorted(set(messages))[:3]))
  with open(os.path.join(args.out_dir, "results.json"), "w") as f:
    json.dump({n: {k: dict(c) for k, c in t.items()}
               for n, t in table.items()} | {"totals": dict(totals)}, f,
              indent=1)


if __name__ == "__main__":
  main()
