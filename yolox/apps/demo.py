"""The demo: run a Predictor over an image, a folder of images, a video or a camera, and save the drawn results."""
import os
import time

import cv2
from loguru import logger

__all__ = ["IMAGE_EXT", "get_image_list", "image_demo", "imageflow_demo", "result_folder"]

IMAGE_EXT = (".jpg", ".jpeg", ".webp", ".bmp", ".png", ".tif", ".tiff")


def get_image_list(path):
    """[path] for an image file, or the images under a folder (recursively, sorted); error when none."""
    path = os.fspath(path)
    if os.path.isdir(path):
        images = sorted(
            os.path.join(root, f) for root, _, files in os.walk(path) for f in files
            if os.path.splitext(f)[1].lower() in IMAGE_EXT
        )
        if not images:
            raise ValueError(f"folder {path!r} holds no images with extensions {', '.join(IMAGE_EXT)}")
        return images
    if os.path.isfile(path):
        return [path]
    raise FileNotFoundError(f"--path {path!r} is neither an image file nor a folder")


def result_folder(vis_folder, current_time):
    """One sub-folder per run, named by its start time (the official layout: <output>/<expn>/vis_res/<time>)."""
    return os.path.join(vis_folder, time.strftime("%Y_%m_%d_%H_%M_%S", current_time))


def image_demo(predictor, vis_folder, path, current_time, save_result):
    """Predict and draw every image of `path`; returns the list of written files (empty without save_result)."""
    written = []
    save_folder = result_folder(vis_folder, current_time) if save_result else None
    for image_name in get_image_list(path):
        outputs, img_info = predictor.inference(image_name)
        result = predictor.visual(outputs[0], img_info, predictor.confthre)
        n = 0 if outputs[0] is None else int((outputs[0][:, 4] * outputs[0][:, 5] >= predictor.confthre).sum())
        logger.info(f"{image_name}: {n} detections")
        if save_result:
            os.makedirs(save_folder, exist_ok=True)
            save_file_name = os.path.join(save_folder, os.path.basename(image_name))
            if not cv2.imwrite(save_file_name, result):
                raise OSError(f"could not write {save_file_name!r}")
            logger.info(f"Saving detection result in {save_file_name}")
            written.append(save_file_name)
    return written


def imageflow_demo(predictor, vis_folder, current_time, demo, path=None, camid=0, save_result=False,
                   max_frames=None):
    """Video file (demo="video", path) or camera (demo="webcam", camid); returns the written video or None.

    Without save_result each frame is shown in a window (Esc or q stops), which needs a display.
    """
    source = path if demo == "video" else camid
    if demo == "video" and not os.path.isfile(path or ""):
        raise FileNotFoundError(f"--path {path!r}: video file not found")
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise ValueError(f"cannot open {'video ' + repr(path) if demo == 'video' else 'camera ' + str(camid)}")
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer, save_path = None, None
    if save_result:
        save_folder = result_folder(vis_folder, current_time)
        os.makedirs(save_folder, exist_ok=True)
        save_path = os.path.join(save_folder, os.path.basename(path) if demo == "video" else "camera.mp4")
        logger.info(f"video save_path is {save_path}")
        writer = cv2.VideoWriter(save_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    frames = 0
    try:
        while max_frames is None or frames < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            outputs, img_info = predictor.inference(frame)
            result = predictor.visual(outputs[0], img_info, predictor.confthre)
            frames += 1
            if writer is not None:
                writer.write(result)
                continue
            try:
                cv2.namedWindow("yolox", cv2.WINDOW_NORMAL)
                cv2.imshow("yolox", result)
            except cv2.error as e:
                raise RuntimeError("no display to show frames on; add --save_result to write a video instead") from e
            if cv2.waitKey(1) in (27, ord("q"), ord("Q")):
                break
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    logger.info(f"processed {frames} frames")
    return save_path
