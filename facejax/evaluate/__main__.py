"""Measures an embedding (or classifier) blob on labelled faces.

  python -m facejax.evaluate pairs FOLDER --out pairs.txt \
      [--sets 10] [--per-set 300] [--seed 0]
  python -m facejax.evaluate verify BLOB --pairs pairs.txt --root FOLDER \
      --out DIR [--chip resize|aligned]
  python -m facejax.evaluate openset BLOB --out DIR \
      (--faces FOLDER [--enrol-people N] [--samples 5] [--seed 0]
       | --gallery G.fjg --known FOLDER) [--impostors FOLDER ...]
  python -m facejax.evaluate impostors LOGITS_BLOB [...] --impostors FOLDER
      [...] --out DIR [--known FOLDER [--embedding BLOB --gallery G.fjg]]

``pairs`` writes LFW's pairs.txt format (sets of matched then mismatched
pairs, people disjoint between sets) from any ``<identity>/<image>``
folder; ``verify`` runs the 10-fold protocol on such a file (threshold
from 9 sets, accuracy on the 10th) and the ROC, EER and AUC. ``openset``
gives DIR at FAR = 1 % and 0.1 % for both matching rules. ``impostors``
is thesis §3.4: the top softmax probability of faces a classifier never
saw, compared with an embedding gallery at equal FAR. Each writes CSV,
``summary.json`` and PNG figures into ``--out``.
"""

import argparse
import sys

from facejax import errors


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="python -m facejax.evaluate", description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  pairs = commands.add_parser("pairs", help="write an LFW pairs file")
  pairs.add_argument("folder")
  pairs.add_argument("--out", required=True)
  pairs.add_argument("--sets", type=int, default=10)
  pairs.add_argument("--per-set", type=int, default=300)
  pairs.add_argument("--seed", type=int, default=0)
  verify = commands.add_parser("verify", help="10-fold verification")
  verify.add_argument("blob")
  verify.add_argument("--pairs", required=True)
  verify.add_argument("--root", required=True,
                      help="the identity folder the pairs number")
  verify.add_argument("--out", required=True)
  verify.add_argument("--chip", choices=("resize", "aligned"),
                      default=None,
                      help="default: aligned when facejax.align is "
                           "installed, else resize")
  verify.add_argument("--threads", type=int, default=2)
  openset = commands.add_parser("openset", help="DIR at FAR")
  openset.add_argument("blob")
  openset.add_argument("--out", required=True)
  openset.add_argument("--faces", default=None,
                       help="identity folder: some people enrolled, the "
                            "others impostors")
  openset.add_argument("--enrol-people", type=int, default=0,
                       help="people of --faces enrolled (default half)")
  openset.add_argument("--samples", type=int, default=5,
                       help="faces enrolled per person")
  openset.add_argument("--seed", type=int, default=0)
  openset.add_argument("--gallery", default=None)
  openset.add_argument("--known", default=None,
                       help="with --gallery: other faces of its people")
  openset.add_argument("--impostors", nargs="*", default=[],
                       help="identity folders of people never enrolled")
  openset.add_argument("--chip", choices=("resize", "aligned"),
                       default=None,
                       help="default: aligned when facejax.align is "
                            "installed, else resize (a --gallery's own)")
  openset.add_argument("--threads", type=int, default=2)
  imp = commands.add_parser("impostors", help="thesis §3.4")
  imp.add_argument("blobs", nargs="+", help="logits blobs")
  imp.add_argument("--impostors", nargs="+", required=True)
  imp.add_argument("--out", required=True)
  imp.add_argument("--known", default=None,
                   help="faces of the classifier's classes")
  imp.add_argument("--embedding", default=None,
                   help="an embedding blob to compare at equal FAR")
  imp.add_argument("--gallery", default=None,
                   help="its gallery of the same people")
  imp.add_argument("--threads", type=int, default=2)
  args = parser.parse_args(argv)
  if args.command == "openset" and bool(args.faces) == bool(args.gallery):
    parser.error("openset: give --faces or --gallery (with --known)")
  if args.command == "impostors" and bool(args.embedding) != bool(
      args.gallery):
    parser.error("impostors: --embedding and --gallery go together")
  return args


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  # pylint: disable-next=g-import-not-at-top
  from facejax.recognition import evaluate_commands as commands
  try:
    if args.command == "pairs":
      commands.pairs(args.folder, args.out, sets=args.sets,
                     per_set=args.per_set, seed=args.seed)
    elif args.command == "verify":
      commands.verify(args.pairs, args.root, args.blob, args.out,
                      chip=args.chip, threads=args.threads)
    elif args.command == "openset":
      commands.openset(args.blob, args.out, impostor_dirs=args.impostors,
                       faces=args.faces, enrol_people=args.enrol_people,
                       samples=args.samples, gallery_path=args.gallery,
                       known=args.known, chip=args.chip, seed=args.seed,
                       threads=args.threads)
    else:
      commands.impostors(args.blobs, args.impostors, args.out,
                         known=args.known, embedding_blob=args.embedding,
                         gallery_path=args.gallery, threads=args.threads)
  except (errors.FacejaxError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
