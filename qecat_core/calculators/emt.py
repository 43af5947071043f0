"""ASE's EMT, evaluated with whole-array numpy instead of a Python loop over atoms.

:class:`FastEMT` subclasses :class:`ase.calculators.emt.EMT` and keeps everything of it (the
parameters, including ASE's H/C/N/O set, the cutoff and its smoothing, the E0 convention); only
``calculate`` is rewritten over neighbour *pairs*. Energies and forces equal ASE's to 1e-10 eV and
1e-8 eV/Å on random alloy slabs with adsorbates (tests/test_emt.py); the speed-up that justifies
it is measured by ``benchmarks/emt_speed.py`` (docs/benchmarks.md). Units: eV, Å.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.calculators.emt import EMT, beta


class FastEMT(EMT):
    """Drop-in replacement for ``ase.calculators.emt.EMT`` with vectorised energy and forces."""

    def _pairs(self, atoms):
        """Neighbour pairs within rc_list from ASE's skin neighbour list (rebuilt only when needed)."""
        self.nl.update(atoms)
        key = (id(self.nl), getattr(self.nl, "nupdates", None))
        if getattr(self, "_pair_key", None) != key:
            ii, jj, oo = [], [], []
            for a in range(len(atoms)):
                nb, off = self.nl.get_neighbors(a)
                ii.append(np.full(len(nb), a))
                jj.append(nb)
                oo.append(off)
            self._pair_cache = (np.concatenate(ii).astype(int), np.concatenate(jj).astype(int),
                                np.concatenate(oo) @ np.array(atoms.cell))
            self._pair_key = key
        i, j, shift = self._pair_cache
        d = atoms.positions[j] + shift - atoms.positions[i]
        r = np.sqrt((d * d).sum(1))
        m = r < self.rc_list
        return i[m], j[m], d[m], r[m]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        Calculator.calculate(self, atoms, properties, system_changes)
        if "numbers" in system_changes or not hasattr(self, "par"):
            self.initialize(self.atoms)
        atoms = self.atoms
        n = len(atoms)
        z = self.ia2iz  # atom -> parameter row
        par = self.par

        i, j, d, r = self._pairs(atoms)
        zi, zj = z[i], z[j]

        # cutoff function and its r-derivative over w
        w = 1.0 / (1.0 + np.exp(self.acut * (r - self.rc)))
        dwdroverw = self.acut * (w - 1.0)
        chi = self.chi[zi, zj]
        s0, eta2, kappa = par["s0"], par["eta2"], par["kappa"]

        dsigma1s = np.exp(-eta2[zj] * (r - beta * s0[zj])) * chi * w
        dsigma1o = np.exp(-eta2[zi] * (r - beta * s0[zi])) / chi * w
        dsigma2s = np.exp(-kappa[zj] * (r / beta - s0[zj])) * chi * w
        dsigma2o = np.exp(-kappa[zi] * (r / beta - s0[zi])) / chi * w

        energies = np.zeros(n)
        deds = np.zeros(n)
        has = np.bincount(i, minlength=n) > 0  # atoms without neighbours contribute nothing
        # E_c and the second term of E_AS (per atom)
        sigma1 = np.bincount(i, weights=dsigma1s, minlength=n)
        za = z[has]
        ds = -np.log(sigma1[has] * par["inv12gamma1"][za]) / (beta * eta2[za])
        lmdsds = par["lambda"][za] * ds
        expneg = np.exp(-lmdsds)
        e0 = par["E0"][za]
        six_v0 = 6.0 * par["V0"][za] * np.exp(-kappa[za] * ds)
        energies[has] = e0 * (1.0 + lmdsds) * expneg + six_v0
        deds[has] = (-e0 * par["lambda"][za] * lmdsds * expneg - kappa[za] * six_v0) / (
            -beta * eta2[za] * sigma1[has])

        # first term of E_AS
        nh = par["neghalfv0overgamma2"]
        es = nh[zi] * dsigma2s
        eo = nh[zj] * dsigma2o
        energies += 0.5 * np.bincount(i, weights=es + eo, minlength=n)

        invr = 1.0 / r
        dedr = (es * (dwdroverw - kappa[zj] / beta) + eo * (dwdroverw - kappa[zi] / beta)
                + deds[i] * dsigma1s * (dwdroverw - eta2[zj]) + deds[j] * dsigma1o * (dwdroverw - eta2[zi]))
        f = (dedr * invr)[:, None] * d
        forces = np.zeros((n, 3))
        for k in range(3):
            forces[:, k] = np.bincount(i, weights=f[:, k], minlength=n)

        energies -= par["E0"][z]  # ASAP convention
        energy = float(energies.sum())
        self.energies, self.forces = energies, forces
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["energies"] = energies
        self.results["forces"] = forces
        if atoms.cell.rank == 3:
            stress = 0.5 * d.T @ f
            stress = (stress + stress.T) * 0.5 / atoms.get_volume()
            self.results["stress"] = stress.flat[[0, 4, 8, 5, 2, 1]]
        elif "stress" in properties:
            raise PropertyNotImplementedError
