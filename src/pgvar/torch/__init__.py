"""PyTorch policies on Gymnasium environments (the optional extra ``pgvar[gym]``): the same KPI as
the tabular core, measured from per-episode gradients, and exact where the environment is tabular.
"""
