"""The Exps of the published models (yolox_nano ... yolox_x, yolov3); exps/*.py re-export them."""
