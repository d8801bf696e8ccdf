"""The crash matrix with the ledger in PostgreSQL: SIGKILL at each failpoint, rerun, every row
once, no audio uploaded twice. ``make test`` runs one kill per failpoint; ``make test-all`` 24."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.server import SandboxServer

from ..postgres import PostgresServer
from .test_crash_matrix import Matrix, _iteration, crash_seeds


@pytest.fixture(scope="module")
def pg_matrix(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Matrix:
    return Matrix(tmp_path_factory.mktemp("crash-matrix-pg"), ledger_url=postgres.new_database())


@pytest.mark.parametrize("seed", crash_seeds())
def test_crash_iteration_with_postgresql(
    seed: int,
    pg_matrix: Matrix,
    own_sandbox: SandboxServer,
    prefect_api_url: str,
    subprocess_prefect_home: Path,
) -> None:
    _iteration(seed, pg_matrix, own_sandbox, prefect_api_url, subprocess_prefect_home)
    print(
        f"\ncrash matrix (PostgreSQL): {pg_matrix.killed} kills {pg_matrix.points}, "
        f"{len(pg_matrix.rows)} rows, 0 lost, 0 duplicate uploads"
    )
