"""Face alignment for the dlib ResNet: HOG detection, 5 landmarks, chips.

NumPy/OpenCV only (runs on the device): ``hog_detector`` (dlib's frontal
face detector), ``shape_predictor`` (its 5-point landmarks), ``chips``
(``get_face_chip_details`` + ``extract_image_chip``).
"""
