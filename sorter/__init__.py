import os

__version__ = "0.1.0"

# FFmpeg (inside OpenCV), and OpenCV itself, explain a damaged file on stderr in their own words,
# once per reading, between our lines and the progress bar; the scan says it in one line of its
# own. Read by OpenCV as it loads, so set before any module here imports cv2; a user's own
# setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
