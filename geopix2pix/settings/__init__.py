"""Every command's options, declared once and torch-free (so that `COMMAND --help` starts fast).

How to add an option (e.g. ``--lambda-ssim`` to train):
1. Add a field to the command's settings dataclass (train.py `TrainConfig`, predict.py
   `PredictOptions`, export.py `ExportOptions`, evaluate.py, demo.py), where it should appear in
   --help: ``lambda_ssim: float = option(0.0, help="Weight of ...")``. `option` (declare.py) takes
   choices=, short=, flag= (a CLI name other than the field's), metavar=, negatable=, kind=
   (file, folder, bands, gdal, codes), shown_default=, cli=False (Python only), runtime=True
   (how a run goes, not what it makes: dataset.json leaves it out, --resume may change it).
   A flag shared by several commands comes from common.py (quiet, progress, overwrite, device,
   seed, workers); a list of choices is a constant here, which the torch modules import.
2. Check its value in the dataclass's ``__post_init__`` (`check_choice` for choices).
3. Add its name and type to the ``...Keywords`` TypedDict beside the dataclass (what IDEs and type
   checkers see of ``**options``; tests/test_api_options.py fails until the two agree).
The command line (`geopix2pix.cli.options.click_options`) and the API's keyword checks
(`checking.from_keywords`) pick it up; the code that uses it reads ``config.lambda_ssim``.

Modules: declare.py (`option`, the `Option` a field carries), common.py (shared flags),
checking.py (the API's one-line type and name errors), and one module per command.
"""
