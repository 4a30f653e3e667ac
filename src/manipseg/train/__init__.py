"""Training of the segmentation networks: GSR-Net's segment and refine stages (``manipseg train``).

Modules: :mod:`.config` (validated YAML/TOML configs), :mod:`.data` (sample stream, flips, G(M) hook),
:mod:`.refine` (Eqs. 8-9), :mod:`.losses`, :mod:`.checkpoint`, :mod:`.validate`, :mod:`.realdata`
(real forgeries), :mod:`.engine` (the one training loop of every recipe), :mod:`.loop` (the segmentation trainer, single process or DDP) and the GAN's training:
:mod:`.gan_pretrain` (G and D alone, ``recipe: gan``), :mod:`.gan_joint` (with the segmenter),
:mod:`.gan_evaluate` and :mod:`.gan_fig4`.
"""
