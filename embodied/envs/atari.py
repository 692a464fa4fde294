"""Adapter for Atari 2600 games through the Arcade Learning Environment (atari_<game>)."""

import difflib

import ale_py
import ale_py.roms
import cv2
import numpy as np
from PIL import Image

from embodied.core.base import Env, Space, make_act_space, make_obs_space

_LIVES = ('unused', 'discount', 'reset')
_ACTIONS = ('all', 'needed')
_RESIZE = ('opencv', 'pillow')
_NOOP = 0  # Index of NOOP in both the legal and the minimal action set.

# ALE prints a banner and ROM notices on stderr for every interface.
ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)


class Atari(Env):
  """An Atari game with the standard preprocessing options.

  Each agent step repeats the action `repeat` frames, sums the rewards and
  max-pools the last two frames (Atari sprites flicker between frames); the
  pooled frame is resized to `size` (H, W) with 3 channels, or 1 if `gray`.
  sticky: the emulator keeps the previous action with probability 0.25.
  actions: 'all' the 18 legal actions, 'needed' the game's minimal set.
  lives: 'unused' ignores lives; 'discount' marks a life loss terminal but
  plays on; 'reset' ends the episode at a life loss (terminal) and the next
  episode continues the same game from there, until the game is over.
  noops: after a reset, a random number of 0..noops NOOP frames.
  length: emulator frames per game until a time limit (is_last only).
  """

  def __init__(
      self, name='pong', repeat=4, size=(64, 64), gray=False, noops=0, lives='unused',
      sticky=True, actions='all', length=108000, resize='opencv', seed=None):
    _check_choice('lives', lives, _LIVES)
    _check_choice('actions', actions, _ACTIONS)
    _check_choice('resize', resize, _RESIZE)
    if repeat < 1:
      raise ValueError(f'Atari action repeat must be at least 1, got {repeat}.')
    self._repeat = int(repeat)
    self._size = tuple(int(x) for x in size)
    self._gray = bool(gray)
    self._noops = int(noops)
    self._lives_mode = lives
    self._length = int(length)
    self._resize = resize
    self._rng = np.random.default_rng(seed)
    self._ale = ale_py.ALEInterface()
    self._ale.setInt('random_seed', int(self._rng.integers(0, 2 ** 31 - 1)))
    self._ale.setFloat('repeat_action_probability', 0.25 if sticky else 0.0)
    self._ale.loadROM(str(ale_py.roms.get_rom_path(rom_name(name))))
    action_set = (
        self._ale.getLegalActionSet() if actions == 'all' else self._ale.getMinimalActionSet())
    self._actions = list(action_set)
    self._lives = 0
    self._image = None
    self._done = True
    self._game_over = True  # The ALE must be reset before the next episode.

  @property
  def obs_space(self):
    return make_obs_space({'image': Space(np.uint8, self._size + (1 if self._gray else 3,))})

  @property
  def act_space(self):
    return make_act_space({'action': Space(np.int32, (), 0, len(self._actions) - 1)})

  def step(self, action):
    if action['reset'] or self._done:
      return self._reset()
    game_action = self._actions[int(action['action'])]
    reward = 0.0
    frames = []
    for index in range(self._repeat):
      reward += self._ale.act(game_action)
      over = self._ale.game_over()
      if over or index >= self._repeat - 2:
        frames.append(self._screen())
      if over:
        break
    self._image = self._preprocess(max_pool(frames))
    lives = self._ale.lives()
    life_lost = lives < self._lives
    self._lives = lives
    over = self._ale.game_over()
    truncated = self._ale.getEpisodeFrameNumber() >= self._length
    is_terminal = over or (life_lost and self._lives_mode != 'unused')
    is_last = over or truncated or (life_lost and self._lives_mode == 'reset')
    self._game_over = over or truncated
    self._done = is_last
    return self._obs(reward, is_last=is_last, is_terminal=is_terminal)

  def render(self):
    return self._ale.getScreenRGB()

  def close(self):
    self._ale = None

  def _reset(self):
    self._done = False
    if self._game_over or self._lives_mode != 'reset':
      self._ale.reset_game()
      for _ in range(self._rng.integers(0, self._noops + 1)):
        self._ale.act(self._actions[_NOOP])
        if self._ale.game_over():
          self._ale.reset_game()
      self._game_over = False
      self._lives = self._ale.lives()
      self._image = self._preprocess(self._screen())
    # Else a life was lost in 'reset' mode: the game goes on from the last frame.
    return self._obs(0.0, is_first=True)

  def _screen(self):
    return self._ale.getScreenGrayscale() if self._gray else self._ale.getScreenRGB()

  def _preprocess(self, frame):
    """[210, 160(, 3)] uint8 -> [H, W, C] uint8."""
    image = resize(frame, self._size, self._resize)
    return image[..., None] if image.ndim == 2 else image

  def _obs(self, reward, is_first=False, is_last=False, is_terminal=False):
    return {
        'image': self._image,
        'reward': np.float32(reward),
        'is_first': is_first,
        'is_last': is_last,
        'is_terminal': is_terminal,
    }


def max_pool(frames):
  """Elementwise maximum of the last two frames [..., H, W(, C)] (or the only one)."""
  return np.maximum.reduce(list(frames[-2:]))


def resize(frame, size, method='opencv'):
  """[h, w(, C)] uint8 -> [H, W(, C)] uint8 by area averaging (opencv) or bilinear (pillow)."""
  if frame.shape[:2] == tuple(size):
    return frame
  if method == 'opencv':
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
  image = Image.fromarray(frame).resize((size[1], size[0]), Image.Resampling.BILINEAR)
  return np.asarray(image)


def rom_name(name):
  """'pong' -> 'pong', 'ms_pacman' or 'MsPacman' -> 'ms_pacman'; unknown games raise."""
  snake = ''.join(
      f'_{char.lower()}' if char.isupper() and index else char.lower()
      for index, char in enumerate(name))
  games = ale_py.roms.get_all_rom_ids()
  for candidate in (name, snake):
    if candidate in games:
      return candidate
  close = difflib.get_close_matches(snake, games, n=3)
  hint = f" Did you mean {', '.join(close)}?" if close else ''
  raise ValueError(
      f"Unknown Atari game '{name}': use atari_<game> with a snake_case ROM name of "
      f'ale-py {ale_py.__version__} (e.g. atari_pong, atari_ms_pacman).{hint}')


def _check_choice(key, value, choices):
  if value not in choices:
    raise ValueError(
        f"Atari option {key}='{value}' is not one of {', '.join(choices)}; "
        f'set env.atari.{key} to one of them.')
