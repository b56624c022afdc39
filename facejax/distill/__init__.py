"""Knowledge distillation: a frozen teacher's outputs train a small student.

teacher.py loads the teacher (dlib's ResNet, a facejax checkpoint or a
blob), data.py mixes the face sources and their augmented views,
targets.py caches the teacher's output for every view, losses.py holds
the objectives and job.py the loop (``config.job = "distill"``,
configs/distill.py).
"""
