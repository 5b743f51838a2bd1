"""sensor_msgs Image / CompressedImage <-> numpy, through ivf_ros.io.image_codec."""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ivf_ros.io.image_codec import (
    array_to_image_fields,
    decode_compressed,
    encode_compressed,
    message_to_array,
)


def camera_info_topic(image_topic: str) -> str:
    """Return the camera_info topic beside an image topic (image_transport's rule)."""
    namespace, _, _ = image_topic.rpartition('/')
    if namespace or image_topic.startswith('/'):
        return f'{namespace}/camera_info'
    return 'camera_info'


def camera_info_image_size(info: CameraInfo) -> tuple[int, int]:
    """Return the (height, width) of the images a CameraInfo describes (ROI and binning)."""
    # width/height are the calibration's full resolution; a camera publishing a region of
    # interest, or binned pixels, sends smaller images (sensor_msgs/CameraInfo's comments).
    bin_x, bin_y = max(1, info.binning_x), max(1, info.binning_y)
    if info.roi.width > 0 and info.roi.height > 0:
        return info.roi.height // bin_y, info.roi.width // bin_x
    return info.height // bin_y, info.width // bin_x


def image_msg_to_array(msg: Image) -> tuple[np.ndarray, str]:
    """Return (array, encoding) of an Image, a zero-copy view when possible; ImageFormatError."""
    return message_to_array(msg), msg.encoding


def compressed_msg_to_array(msg: CompressedImage) -> tuple[np.ndarray, str]:
    """Return (array, encoding) of a CompressedImage (jpeg/png); raises ImageFormatError."""
    return decode_compressed(msg.format, bytes(msg.data))


def array_to_image_msg(array: np.ndarray, encoding: str, header: Header) -> Image:
    """Return an Image carrying array in encoding, with header (the input's, copied)."""
    fields = array_to_image_fields(array, encoding)
    return Image(header=header, height=fields.height, width=fields.width,
                 encoding=fields.encoding, is_bigendian=int(fields.is_bigendian),
                 step=fields.step, data=fields.data)


def array_to_compressed_msg(array: np.ndarray, encoding: str, header: Header,
                            fmt: str = 'jpeg') -> CompressedImage:
    """Return a CompressedImage of array (format string as image_transport writes it)."""
    format_string, data = encode_compressed(array, encoding, fmt)
    return CompressedImage(header=header, format=format_string, data=data)
