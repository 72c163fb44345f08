"""Choosing what ships, on ratings held out for the purpose: the CV folds (`folds`), their
fits and figures (`cross_validation`, `evaluation`), the list each fold ships (`list_choice`),
the hyperparameter search (`search`, `search_result`) and the CV's outcome (`cv_result`)."""
