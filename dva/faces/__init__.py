"""The face stage: any video in, aligned face crops in the Aff-Wild2 release's layout out.

`faces_for_video(path, crops_root, settings)` does one video (dva/faces/stage.py; the layout it writes is
dva/data/layout.py's, the frames dva/data/video.py's);
`run_faces(data, settings, out)` does every video under a folder. Detectors are a registry
(dva/faces/detectors/), dlib's HOG the default; dlib comes with `pip install 'dva[faces]'`.
"""

from dva.faces.run import FacesReport, crops_folder, run_faces
from dva.faces.stage import FaceRecord, FaceSettings, faces_for_video

__all__ = ["FaceRecord", "FaceSettings", "FacesReport", "crops_folder", "faces_for_video", "run_faces"]
