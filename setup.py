import pathlib

import setuptools

here = pathlib.Path(__file__).parent


def requirements():
  lines = (here / 'requirements.txt').read_text().splitlines()
  return [line.strip() for line in lines if line.strip() and not line.startswith('#')]


extras = {
    # dm_control 1.0.50 needs mujoco>=3.17 and breaks with mujoco 4 (flex_vertedge).
    'dmc': ['dm_control>=1.0.50', 'mujoco>=3.17,<4'],
    'atari': ['ale-py>=0.9', 'opencv-python-headless>=4.6'],
    'plot': ['matplotlib>=3.5'],
    'bsuite': ['bsuite>=0.3.6'],
    'memmaze': ['dm_control>=1.0.50', 'mujoco>=3.17,<4', 'memory-maze>=1.0.3', 'gym>=0.26'],
}
extras['all'] = sorted({pkg for name in ('dmc', 'atari', 'plot') for pkg in extras[name]})

setuptools.setup(
    name='dreamerv3',
    version='0.1.0',
    description='A faithful, fast JAX reimplementation of DreamerV3.',
    long_description=(here / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    packages=setuptools.find_packages(include=['dreamerv3', 'dreamerv3.*', 'embodied', 'embodied.*']),
    package_data={'dreamerv3': ['configs.yaml']},
    include_package_data=True,
    install_requires=requirements(),
    extras_require=extras,
    python_requires='>=3.10',
    entry_points={'console_scripts': ['dreamerv3-train = dreamerv3.train:main']},
)
