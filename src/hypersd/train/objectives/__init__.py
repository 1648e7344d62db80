"""The objectives of Hyper-SD, one class each, all behind the `Objective` protocol (base.py):
`TSCD` (section 3.1, Algorithm 1, eq. 12), `FeedbackLearning` (section 3.2, eq. 13-15) and
`ScoreDistillation` (section 3.3; DMD). The run (hypersd.train.stages) calls only the protocol."""
