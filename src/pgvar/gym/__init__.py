"""Gymnasium environments for pgvar (the optional extra ``pgvar[gym]``).

``pgvar.gym.tabular`` reads the model of a tabular Gymnasium environment (``env.unwrapped.P``) into
a :class:`~pgvar.mdp.TabularMDP`, so the exact engine runs on it (``--mdp gym:FrozenLake-v1``).
"""
