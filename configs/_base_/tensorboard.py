# Add to a config's _base_ list to also log scalars to TensorBoard
# (needs `pip install tensorboard`); the text log and vis_data/scalars.json stay.
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
