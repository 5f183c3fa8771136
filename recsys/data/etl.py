"""`run_etl`: the processed dataset of a data config, built by the engine the config names.

The engines run the same steps (`steps.py`) and share the rest of a run (`etl_common.py`): polars
(`polars_etl.py`, the default) and Apache Spark (`spark_etl.py`, `engine: spark`). Neither imports the
other; this module picks one, and imports the Spark one only when asked for, since pyspark is an extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from recsys.data.config import DataConfig
from recsys.data.etl_common import EtlResult
from recsys.data.polars_etl import run_etl_polars

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def run_etl(cfg: DataConfig, *, base_dir: Path | None = None, spark: SparkSession | None = None) -> EtlResult:
    """Run the whole ETL for `cfg` on its engine and write the processed dataset directory.

    Args:
        cfg: the data config; `engine` picks polars or Spark.
        base_dir: directory relative paths are resolved against (default: the working directory).
        spark: the Spark session of `engine: spark` (default: the running one, or a new local one);
            unused by the polars engine.
    """
    if cfg.engine == "spark":
        from recsys.data.spark_etl import run_etl_spark

        return run_etl_spark(cfg, base_dir=base_dir, spark=spark)
    return run_etl_polars(cfg, base_dir=base_dir)
