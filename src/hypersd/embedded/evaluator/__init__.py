"""ShapesEval: a learned detector that reads Shapes images, the rule-based judge and `hypersd eval`."""
