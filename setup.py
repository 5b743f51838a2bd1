"""Install ivf_ros: the Python package, console scripts and the ament share files."""

from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = 'ivf_ros'


def share_files(folder: str, pattern: str = '*') -> tuple[str, list[str]]:
    """Return a data_files entry installing folder/pattern under share/ivf_ros/folder."""
    files = sorted(path for path in glob(os.path.join(folder, pattern)) if os.path.isfile(path))
    return os.path.join('share', PACKAGE, folder), files


setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', [os.path.join('resource', PACKAGE)]),
        (os.path.join('share', PACKAGE), ['package.xml']),
        share_files('launch', '*.launch.py'),
        share_files('config'),
        share_files('models'),
    ],
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='ivf_ros maintainers',
    maintainer_email='maintainers@ivf-ros.dev',
    description='Visible-infrared image fusion and detection for seeing at night (ROS 2).',
    license='AGPL-3.0-only',
    entry_points={
        'console_scripts': [
            'fusion_node = ivf_ros.nodes.fusion_node:main',
            'detection_node = ivf_ros.nodes.detection_node:main',
            'ivf-graph = ivf_ros.nodes.graph:main',
            'ivf-eval = ivf_ros.cli.eval:main',
            'ivf-train = ivf_ros.cli.train:main',
            'ivf-bag = ivf_ros.cli.bag:main',
            'ivf-demo = ivf_ros.cli.demo:main',
            'ivf-export = ivf_ros.cli.export:main',
        ],
    },
)
