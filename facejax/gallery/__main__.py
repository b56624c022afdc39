"""Builds and calibrates a gallery of enrolled people for an embedding blob.

  python -m facejax.gallery create G.fjg --model resnet.fjx \
      [--chip aligned|resize] [--matching mean|nearest] [--force]
  python -m facejax.gallery add G.fjg --name NAME IMAGES_FOLDERS_OR_VIDEOS \
      [--model resnet.fjx] [--detector none|haar|hog] [--max-video-faces 10]
  python -m facejax.gallery list G.fjg
  python -m facejax.gallery remove G.fjg --name NAME
  python -m facejax.gallery calibrate G.fjg --faces LABELLED_FOLDER \
      [--far 0.01] [--model resnet.fjx]

The gallery holds every enrolled sample's embedding and the fingerprint
of the blob that made them; another blob is refused. ``add`` takes face
crops (``--detector none``), photographs (``haar``: the largest face of
each) or a video of one person (its sharpest, largest faces, at most
``--max-video-faces``). ``calibrate`` sets the distance threshold for a
false-accept rate on a folder of ``<identity>/<image>`` faces that holds
people not enrolled (facejax/recognition/calibrate.py). ``--model`` can
be left out when the blob lies beside the gallery under the name it was
created with.
"""

import argparse
import sys

from facejax import errors


def parse_args(argv):
  parser = argparse.ArgumentParser(
      prog="python -m facejax.gallery", description=__doc__.split("\n")[0])
  commands = parser.add_subparsers(dest="command", required=True)
  create = commands.add_parser("create", help="an empty gallery")
  create.add_argument("gallery")
  create.add_argument("--model", required=True, help="an embedding blob")
  create.add_argument("--chip", choices=("resize", "aligned"), default=None,
                      help="face → chip (default: aligned when facejax.align "
                           "is installed, else resize)")
  create.add_argument("--matching", choices=("nearest", "mean"),
                      default=None,
                      help="a person's distance: to the nearest sample or "
                           "to the samples' mean (default: mean for "
                           "aligned chips, nearest for resized, as "
                           "measured in facejax/recognition/gallery.py)")
  create.add_argument("--force", action="store_true",
                      help="overwrite an existing file")
  add = commands.add_parser("add", help="enrol a person")
  add.add_argument("gallery")
  add.add_argument("sources", nargs="+",
                   help="images, folders of images or videos")
  add.add_argument("--name", required=True)
  add.add_argument("--model", default=None)
  add.add_argument("--detector", choices=("none", "haar", "hog"),
                   default="none",
                   help="none: every image is a face crop; haar or hog: the "
                        "largest face of each (videos: haar unless hog)")
  add.add_argument("--max-video-faces", type=int, default=10)
  add.add_argument("--margin", type=float, default=0.1,
                   help="detected box growth per side for resized chips "
                        "(as the demo's; aligned chips use the box as is)")
  add.add_argument("--threads", type=int, default=2)
  listing = commands.add_parser("list", help="who is enrolled")
  listing.add_argument("gallery")
  remove = commands.add_parser("remove", help="remove a person")
  remove.add_argument("gallery")
  remove.add_argument("--name", required=True)
  cal = commands.add_parser("calibrate", help="threshold for a target FAR")
  cal.add_argument("gallery")
  cal.add_argument("--faces", required=True,
                   help="labelled folder <identity>/<image>")
  cal.add_argument("--far", type=float, default=0.01)
  cal.add_argument("--model", default=None)
  cal.add_argument("--threads", type=int, default=2)
  args = parser.parse_args(argv)
  if getattr(args, "max_video_faces", 1) < 1:
    parser.error("--max-video-faces must be at least 1")
  if getattr(args, "threads", 1) < 1:
    parser.error("--threads must be at least 1")
  if not 0.0 < getattr(args, "far", 0.5) < 1.0:
    parser.error(f"--far {args.far}: expected a rate in (0, 1)")
  return args


def main(argv=None) -> int:
  args = parse_args(sys.argv[1:] if argv is None else argv)
  # pylint: disable-next=g-import-not-at-top
  from facejax.recognition import gallery_commands as commands
  try:
    if args.command == "create":
      commands.create(args.gallery, args.model, chip=args.chip,
                      matching=args.matching, force=args.force)
    elif args.command == "add":
      commands.add(args.gallery, args.name, args.sources,
                   commands.model_path_for(args.gallery, args.model),
                   detector=args.detector,
                   max_video_faces=args.max_video_faces, margin=args.margin,
                   threads=args.threads)
    elif args.command == "list":
      print(commands.describe(args.gallery))
    elif args.command == "remove":
      commands.remove(args.gallery, args.name)
    else:
      commands.calibrate(args.gallery, args.faces, args.far,
                         commands.model_path_for(args.gallery, args.model),
                         threads=args.threads)
  except errors.FacejaxError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())

