"""Gymnasium environments for pgvar (the optional extra ``pgvar[gym]``).

``pgvar.gym.tabular`` reads the model of a tabular Gymnasium environment (``env.unwrapped.P``) into
a :class:`~pgvar.mdp.TabularMDP`, so the exact engine runs on it (``--mdp gym:FrozenLake-v1``).

``pgvar.gym.lqr`` is a linear-quadratic regulator with its exact policy gradient in closed form;
importing this package registers it as ``pgvar/LQR-v0`` (50 steps), so ``gym.make("pgvar/LQR-v0")``
works after ``import pgvar.gym`` (or ``gym.make("pgvar.gym:pgvar/LQR-v0")`` without it).
"""

LQR_ID = "pgvar/LQR-v0"

try:
    import gymnasium
except ImportError:  # pgvar.gym.envspec still parses, and says how to install the extra
    gymnasium = None

# the entry point is a string, so importing this package costs Gymnasium alone; checking the
# registry first keeps a second registration (importlib.reload) from warning
if gymnasium is not None and LQR_ID not in gymnasium.registry:
    gymnasium.register(id=LQR_ID, entry_point="pgvar.gym.lqr:LQREnv", max_episode_steps=50)
