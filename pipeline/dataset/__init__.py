"""The dataset: reading the CSV files' layout (csv_files.py), their statistics with TFDV (statistics.py), and the
contract decided from them (roles.py): the task and each column's role, which the module files then apply
(pipeline/modules/features.py). analysis.py puts the three together for a configuration."""
