//! Small-number suppression for aggregate tables, with complementary ("secondary")
//! suppression so that no suppressed count can be worked out from what is shown.
//!
//! A [`Table`] is a set of counts (cells) and the linear equations that hold between them
//! whatever the data: a group's categories add up to the same population as another group's,
//! the periods of a column add up to its total over the whole range, and so on. Counts that
//! are never shown but take part in such equations (the number of excluded plans with limited
//! connectivity, referrals not overdue) are *hidden* cells.
//!
//! [`Table::protect`] then:
//! 1. suppresses every shown count from 1 to `threshold − 1` (primary suppression; shown as
//!    `"<k"`, so a reader knows it lies between 1 and k − 1);
//! 2. looks for a primary cell that can still be worked out exactly from the shown counts:
//!    - by linear algebra: the cell is fixed by the equations once every shown count is
//!      substituted (Gaussian elimination over the unknowns, in a prime field: exact);
//!    - by bounds: a reader knows a primary cell lies in 1..k−1 and every count is at least 0;
//!      interval propagation through the equations finds a cell pinned to one value (for
//!      example two `"<5"` cells that must add up to 2);
//! 3. for each such cell, withholds one more shown count of an equation it takes part in
//!    (secondary suppression; shown as `null`, "withheld", so a reader knows nothing of its
//!    value): a total over the whole range first (one withheld total protects a whole column
//!    of periods), otherwise the smallest non-zero count, zeros last; then goes back to 2.
//!
//! The result: no suppressed count follows exactly from the shown ones by subtraction or by
//! the known bounds. What it does not promise: that a count cannot be narrowed to a smaller
//! range than 1..k−1, or that two reports over different ranges cannot be combined (see the
//! README's "Equity report" section for how the API limits that).

/// Σ coefficient × value + constant = 0, over positions in a group of cells.
type LinearEquation = (Vec<(usize, i128)>, i128);

/// Largest group of unknown cells whose every possible value is tried.
const ENUMERATED_CELLS: usize = 12;
/// Most steps of that search per group.
const ENUMERATION_BUDGET: usize = 2_000_000;

/// What a reader sees of one count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// The exact count.
    Count(u64),
    /// Suppressed: from 1 to threshold − 1.
    Below,
    /// Withheld so that a suppressed count elsewhere cannot be worked out.
    Withheld,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Shown unless suppressed.
    Shown,
    /// Shown; withheld first when a secondary suppression is needed (totals over the range).
    Total,
    /// Never shown; only takes part in equations.
    Hidden,
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    value: u64,
    role: Role,
}

/// Counts and the equations between them.
#[derive(Debug, Clone, Default)]
pub struct Table {
    cells: Vec<Cell>,
    /// Each equation: Σ coefficient × cell = 0.
    equations: Vec<Vec<(usize, i64)>>,
}

/// The cells' state during protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Published,
    Primary,
    Secondary,
    Hidden,
}

impl Table {
    pub fn new() -> Table {
        Table::default()
    }

    /// A count that is shown.
    pub fn cell(&mut self, value: u64) -> usize {
        self.push(value, Role::Shown)
    }

    /// A count over the whole range, withheld first when a secondary suppression is needed.
    pub fn total(&mut self, value: u64) -> usize {
        self.push(value, Role::Total)
    }

    /// A count that is never shown but is bound by the equations.
    pub fn hidden(&mut self, value: u64) -> usize {
        self.push(value, Role::Hidden)
    }

    fn push(&mut self, value: u64, role: Role) -> usize {
        self.cells.push(Cell { value, role });
        self.cells.len() - 1
    }

    /// `total` = Σ `parts`.
    pub fn sum(&mut self, total: usize, parts: &[usize]) {
        let mut eq = vec![(total, 1)];
        eq.extend(parts.iter().map(|&p| (p, -1)));
        self.equation(eq);
    }

    /// Σ `a` = Σ `b` (two partitions of one population).
    pub fn same_sum(&mut self, a: &[usize], b: &[usize]) {
        let mut eq: Vec<(usize, i64)> = a.iter().map(|&c| (c, 1)).collect();
        eq.extend(b.iter().map(|&c| (c, -1)));
        self.equation(eq);
    }

    /// Σ coefficient × cell = 0; it must hold for the values given.
    pub fn equation(&mut self, terms: Vec<(usize, i64)>) {
        let mut merged: Vec<(usize, i64)> = Vec::new();
        for (c, k) in terms {
            match merged.iter_mut().find(|(m, _)| *m == c) {
                Some(t) => t.1 += k,
                None => merged.push((c, k)),
            }
        }
        merged.retain(|(_, k)| *k != 0);
        debug_assert_eq!(
            merged
                .iter()
                .map(|&(c, k)| k as i128 * self.cells[c].value as i128)
                .sum::<i128>(),
            0,
            "an equation that does not hold for the data"
        );
        if !merged.is_empty() {
            self.equations.push(merged);
        }
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// What a reader is shown of each cell (hidden cells read as `Withheld`).
    pub fn protect(&self, threshold: u64) -> Vec<Shown> {
        let mut state: Vec<State> = self
            .cells
            .iter()
            .map(|c| match c.role {
                Role::Hidden => State::Hidden,
                _ if c.value >= 1 && c.value < threshold => State::Primary,
                _ => State::Published,
            })
            .collect();
        let mut by_cell: Vec<Vec<usize>> = vec![Vec::new(); self.cells.len()];
        for (e, eq) in self.equations.iter().enumerate() {
            for &(c, _) in eq {
                by_cell[c].push(e);
            }
        }
        // Each round withholds at least one more count, so this ends; the bound is a guard.
        for _ in 0..=self.cells.len() {
            let disclosed = self.disclosed(&state, threshold);
            if disclosed.is_empty() {
                break;
            }
            let mut touched = vec![false; self.equations.len()];
            let mut added = false;
            for j in disclosed {
                if by_cell[j].iter().any(|&e| touched[e]) {
                    continue; // a withheld count this round already shares an equation with it
                }
                if let Some(c) = self.candidate(j, &state, &by_cell) {
                    state[c] = State::Secondary;
                    for &e in &by_cell[c] {
                        touched[e] = true;
                    }
                    added = true;
                }
            }
            if !added {
                // Nothing left to withhold near a disclosed cell: withhold everything.
                for s in state.iter_mut().filter(|s| **s == State::Published) {
                    *s = State::Secondary;
                }
                break;
            }
        }
        self.cells
            .iter()
            .zip(&state)
            .map(|(c, s)| match s {
                State::Published => Shown::Count(c.value),
                State::Primary => Shown::Below,
                State::Secondary | State::Hidden => Shown::Withheld,
            })
            .collect()
    }

    /// The shown count to withhold for the disclosed cell `j`: from the equations around it,
    /// widening one equation at a time through unknown cells until one is found.
    fn candidate(&self, j: usize, state: &[State], by_cell: &[Vec<usize>]) -> Option<usize> {
        let mut seen_cells = vec![false; self.cells.len()];
        let mut seen_eqs = vec![false; self.equations.len()];
        let mut frontier = vec![j];
        seen_cells[j] = true;
        while !frontier.is_empty() {
            let mut found: Vec<usize> = Vec::new();
            let mut next = Vec::new();
            for &c in &frontier {
                for &e in &by_cell[c] {
                    if std::mem::replace(&mut seen_eqs[e], true) {
                        continue;
                    }
                    for &(d, _) in &self.equations[e] {
                        if std::mem::replace(&mut seen_cells[d], true) {
                            continue;
                        }
                        if state[d] == State::Published {
                            found.push(d);
                        } else {
                            next.push(d);
                        }
                    }
                }
            }
            if let Some(best) = found.into_iter().min_by_key(|&c| {
                let cell = self.cells[c];
                (cell.role != Role::Total, cell.value == 0, cell.value, c)
            }) {
                return Some(best);
            }
            frontier = next;
        }
        None
    }

    /// Primary cells a reader can work out exactly.
    fn disclosed(&self, state: &[State], threshold: u64) -> Vec<usize> {
        let unknown: Vec<bool> = state.iter().map(|s| *s != State::Published).collect();
        let fixed = self.determined(&unknown);
        let bounds = self.bounds(state, threshold);
        let pinned: Vec<bool> = bounds
            .iter()
            .zip(state)
            .map(|(i, s)| *s == State::Primary && i.is_pinned())
            .collect();
        let mut out: Vec<usize> = (0..self.cells.len())
            .filter(|&c| state[c] == State::Primary && (fixed[c] || pinned[c]))
            .collect();
        if out.is_empty() {
            // Bounds met through several equations at once can still pin a cell (a + b ≤ 4
            // and c + d ≤ 4 with a + c = 5 leave b + d ≤ 3): where a group of suppressed
            // counts is small, try every value they can take.
            let fixed = self.enumerated(state, &bounds);
            out = (0..self.cells.len())
                .filter(|&c| state[c] == State::Primary && fixed[c])
                .collect();
        }
        out
    }

    /// Primary cells that take one value in every solution, found by trying every value
    /// within `bounds` for each small group of unknown cells (at most [`ENUMERATED_CELLS`]
    /// cells, [`ENUMERATION_BUDGET`] steps); larger groups are left to the other checks.
    fn enumerated(&self, state: &[State], bounds: &[Interval]) -> Vec<bool> {
        let mut fixed = vec![false; self.cells.len()];
        let unknown: Vec<bool> = state.iter().map(|s| *s != State::Published).collect();
        for (cells, eqs) in self.components(&unknown) {
            if cells.len() > ENUMERATED_CELLS || !cells.iter().any(|&c| state[c] == State::Primary)
            {
                continue;
            }
            let ranges: Option<Vec<(i128, i128)>> = cells
                .iter()
                .map(|&c| bounds[c].lo.zip(bounds[c].hi))
                .collect();
            let Some(ranges) = ranges else { continue };
            let pos: std::collections::HashMap<usize, usize> =
                cells.iter().enumerate().map(|(i, &c)| (c, i)).collect();
            // Each equation over (position, coefficient), with its shown counts as a constant,
            // checked once its last unknown cell has a value.
            let mut due: Vec<Vec<LinearEquation>> = vec![Vec::new(); cells.len()];
            for &e in &eqs {
                let mut terms = Vec::new();
                let mut constant = 0i128;
                for &(c, k) in &self.equations[e] {
                    match pos.get(&c) {
                        Some(&i) => terms.push((i, k as i128)),
                        None => constant += k as i128 * self.cells[c].value as i128,
                    }
                }
                let last = terms.iter().map(|&(i, _)| i).max().unwrap_or(0);
                due[last].push((terms, constant));
            }
            // Per cell: the value of the first solution, and whether another one differs.
            let mut first: Vec<Option<i128>> = vec![None; cells.len()];
            let mut varies = vec![false; cells.len()];
            let mut vals: Vec<i128> = ranges.iter().map(|r| r.0).collect();
            let mut depth = 0usize;
            let mut steps = 0usize;
            let mut next: Vec<i128> = vec![ranges[0].0; cells.len()];
            let complete = loop {
                if steps > ENUMERATION_BUDGET {
                    break false;
                }
                steps += 1;
                if next[depth] > ranges[depth].1 {
                    // Every value of this cell tried: back up.
                    if depth == 0 {
                        break true;
                    }
                    depth -= 1;
                    continue;
                }
                vals[depth] = next[depth];
                next[depth] += 1;
                let holds = due[depth].iter().all(|(terms, constant)| {
                    terms.iter().map(|&(i, k)| k * vals[i]).sum::<i128>() + constant == 0
                });
                if !holds {
                    continue;
                }
                if depth + 1 < cells.len() {
                    depth += 1;
                    next[depth] = ranges[depth].0;
                    continue;
                }
                for (i, v) in vals.iter().enumerate() {
                    match first[i] {
                        None => first[i] = Some(*v),
                        Some(f) if f != *v => varies[i] = true,
                        Some(_) => {}
                    }
                }
            };
            if complete {
                for (i, &c) in cells.iter().enumerate() {
                    if state[c] == State::Primary && first[i].is_some() && !varies[i] {
                        fixed[c] = true;
                    }
                }
            }
        }
        fixed
    }

    /// Unknown cells whose value the equations fix once the known ones are substituted: a
    /// cell is fixed when no solution of the homogeneous system moves it, i.e. it is a pivot
    /// of the reduced row echelon form whose row has no entry in a free column.
    fn determined(&self, unknown: &[bool]) -> Vec<bool> {
        let mut fixed = vec![false; self.cells.len()];
        for component in self.components(unknown) {
            let (cells, eqs) = component;
            let col: std::collections::HashMap<usize, usize> =
                cells.iter().enumerate().map(|(i, &c)| (c, i)).collect();
            let mut m: Vec<Vec<u64>> = eqs
                .iter()
                .map(|&e| {
                    let mut row = vec![0u64; cells.len()];
                    for &(c, k) in &self.equations[e] {
                        if let Some(&i) = col.get(&c) {
                            row[i] = gf::add(row[i], gf::from_i64(k));
                        }
                    }
                    row
                })
                .collect();
            let pivots = gf::rref(&mut m, cells.len());
            let pivot_cols: Vec<bool> = {
                let mut p = vec![false; cells.len()];
                for &(_, c) in &pivots {
                    p[c] = true;
                }
                p
            };
            for &(r, c) in &pivots {
                let alone = m[r]
                    .iter()
                    .enumerate()
                    .all(|(i, &v)| v == 0 || pivot_cols[i]);
                if alone {
                    fixed[cells[c]] = true;
                }
            }
        }
        fixed
    }

    /// Connected groups of unknown cells (joined by equations), each with its equations.
    fn components(&self, unknown: &[bool]) -> Vec<(Vec<usize>, Vec<usize>)> {
        let n = self.cells.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        for eq in &self.equations {
            let mut first = None;
            for &(c, _) in eq.iter().filter(|(c, _)| unknown[*c]) {
                match first {
                    None => first = Some(c),
                    Some(f) => {
                        let (a, b) = (find(&mut parent, f), find(&mut parent, c));
                        parent[a] = b;
                    }
                }
            }
        }
        let mut groups: std::collections::BTreeMap<usize, (Vec<usize>, Vec<usize>)> =
            Default::default();
        for c in (0..n).filter(|&c| unknown[c]) {
            let root = find(&mut parent, c);
            groups.entry(root).or_default().0.push(c);
        }
        for (e, eq) in self.equations.iter().enumerate() {
            if let Some(&(c, _)) = eq.iter().find(|(c, _)| unknown[*c]) {
                let root = find(&mut parent, c);
                groups.entry(root).or_default().1.push(e);
            }
        }
        groups.into_values().collect()
    }

    /// Every cell's bounds (1..k−1 for primary cells, at least 0 for the others, exact for
    /// shown ones), narrowed through the equations: a primary cell narrowed to one value is
    /// disclosed.
    fn bounds(&self, state: &[State], threshold: u64) -> Vec<Interval> {
        let mut iv: Vec<Interval> = self
            .cells
            .iter()
            .zip(state)
            .map(|(c, s)| match s {
                State::Published => Interval::exact(c.value as i128),
                State::Primary => Interval::new(Some(1), Some(threshold as i128 - 1)),
                State::Secondary | State::Hidden => Interval::new(Some(0), None),
            })
            .collect();
        // The equations as given, and the ones elimination derives from them: the latter
        // relate the suppressed counts directly, with every other unknown eliminated (two
        // "<5" cells that the shown counts make add up to 8 are both 4).
        let mut system: Vec<(Vec<(usize, i128)>, i128)> = self
            .equations
            .iter()
            .map(|eq| (eq.iter().map(|&(c, k)| (c, k as i128)).collect(), 0))
            .collect();
        system.extend(self.derived(state));
        // Propagation converges quickly on these equations; the bound keeps a pathological
        // case finite (stopping early can only miss a narrowing, never invent one).
        for _ in 0..200 {
            let mut changed = false;
            for (eq, constant) in &system {
                for &(j, kj) in eq {
                    if state[j] == State::Published {
                        continue;
                    }
                    // kj·xj = constant − Σ_{i≠j} ki·xi
                    let mut rest = Interval::exact(*constant);
                    for &(i, ki) in eq.iter().filter(|(i, _)| *i != j) {
                        rest = rest.add(iv[i].scale(-ki));
                    }
                    let next = iv[j].intersect(rest.div(kj));
                    if next != iv[j] {
                        iv[j] = next;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        iv
    }

    /// Integer Gauss-Jordan elimination of each component's equations over its unknowns,
    /// the other unknowns' columns first and the primary cells' last, shown counts folded
    /// into the constant: each row is an equation Σ k·x = constant over unknowns only.
    fn derived(&self, state: &[State]) -> Vec<(Vec<(usize, i128)>, i128)> {
        let unknown: Vec<bool> = state.iter().map(|s| *s != State::Published).collect();
        let mut out = Vec::new();
        'component: for (mut cells, eqs) in self.components(&unknown) {
            cells.sort_by_key(|&c| (state[c] == State::Primary, c));
            let col: std::collections::HashMap<usize, usize> =
                cells.iter().enumerate().map(|(i, &c)| (c, i)).collect();
            let n = cells.len();
            // Row: n coefficients, then the constant.
            let mut rows: Vec<Vec<i128>> = eqs
                .iter()
                .map(|&e| {
                    let mut row = vec![0i128; n + 1];
                    for &(c, k) in &self.equations[e] {
                        match col.get(&c) {
                            Some(&i) => row[i] += k as i128,
                            None => row[n] -= k as i128 * self.cells[c].value as i128,
                        }
                    }
                    row
                })
                .collect();
            let mut r = 0;
            for c in 0..n {
                let Some(p) = (r..rows.len()).find(|&i| rows[i][c] != 0) else {
                    continue;
                };
                rows.swap(r, p);
                let pivot = rows[r].clone();
                for (i, row) in rows.iter_mut().enumerate() {
                    if i == r || row[c] == 0 {
                        continue;
                    }
                    let (a, b) = (pivot[c], row[c]);
                    for (v, &pv) in row.iter_mut().zip(&pivot) {
                        match v.checked_mul(a).zip(pv.checked_mul(b)) {
                            Some((x, y)) => *v = x - y,
                            // Coefficients this large do not arise from counts' equations;
                            // give up on deriving rather than overflow.
                            None => continue 'component,
                        }
                    }
                    let g = row.iter().fold(0i128, |g, &v| gcd(g, v.abs()));
                    if g > 1 {
                        row.iter_mut().for_each(|v| *v /= g);
                    }
                }
                r += 1;
            }
            for row in rows {
                let terms: Vec<(usize, i128)> = row[..n]
                    .iter()
                    .enumerate()
                    .filter(|(_, &k)| k != 0)
                    .map(|(i, &k)| (cells[i], k))
                    .collect();
                if !terms.is_empty() {
                    out.push((terms, row[n]));
                }
            }
        }
        out
    }
}

fn gcd(a: i128, b: i128) -> i128 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// An integer interval; `None` is unbounded on that side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    lo: Option<i128>,
    hi: Option<i128>,
}

impl Interval {
    fn new(lo: Option<i128>, hi: Option<i128>) -> Interval {
        Interval { lo, hi }
    }

    fn exact(v: i128) -> Interval {
        Interval::new(Some(v), Some(v))
    }

    fn add(self, o: Interval) -> Interval {
        Interval::new(
            self.lo.zip(o.lo).map(|(a, b)| a + b),
            self.hi.zip(o.hi).map(|(a, b)| a + b),
        )
    }

    fn scale(self, k: i128) -> Interval {
        let (lo, hi) = (self.lo.map(|v| v * k), self.hi.map(|v| v * k));
        if k >= 0 {
            Interval::new(lo, hi)
        } else {
            Interval::new(hi, lo)
        }
    }

    /// The integers x with k·x in `self`.
    fn div(self, k: i128) -> Interval {
        let s = if k < 0 { self.scale(-1) } else { self };
        let k = k.abs();
        Interval::new(
            s.lo.map(|v| v.div_euclid(k) + i128::from(v.rem_euclid(k) != 0)),
            s.hi.map(|v| v.div_euclid(k)),
        )
    }

    fn intersect(self, o: Interval) -> Interval {
        let lo = match (self.lo, o.lo) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let hi = match (self.hi, o.hi) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Interval::new(lo, hi)
    }

    /// One value left (or none: a contradiction, treated as disclosed too).
    fn is_pinned(self) -> bool {
        matches!((self.lo, self.hi), (Some(a), Some(b)) if a >= b)
    }
}

/// Arithmetic in the prime field of order 2^61 − 1: exact elimination without fractions.
mod gf {
    pub const P: u64 = (1 << 61) - 1;

    pub fn from_i64(k: i64) -> u64 {
        (k as i128).rem_euclid(P as i128) as u64
    }

    pub fn add(a: u64, b: u64) -> u64 {
        (a + b) % P
    }

    pub fn sub(a: u64, b: u64) -> u64 {
        (a + P - b) % P
    }

    pub fn mul(a: u64, b: u64) -> u64 {
        ((a as u128 * b as u128) % P as u128) as u64
    }

    pub fn inv(a: u64) -> u64 {
        let (mut base, mut exp, mut acc) = (a, P - 2, 1u64);
        while exp > 0 {
            if exp & 1 == 1 {
                acc = mul(acc, base);
            }
            base = mul(base, base);
            exp >>= 1;
        }
        acc
    }

    /// Reduces `m` to reduced row echelon form; returns the (row, column) of every pivot.
    pub fn rref(m: &mut [Vec<u64>], cols: usize) -> Vec<(usize, usize)> {
        let mut pivots = Vec::new();
        let mut r = 0;
        for c in 0..cols {
            let Some(p) = (r..m.len()).find(|&i| m[i][c] != 0) else {
                continue;
            };
            m.swap(r, p);
            let inv = inv(m[r][c]);
            for v in m[r].iter_mut() {
                *v = mul(*v, inv);
            }
            let pivot_row = m[r].clone();
            for (i, row) in m.iter_mut().enumerate() {
                if i != r && row[c] != 0 {
                    let f = row[c];
                    for (v, &pv) in row.iter_mut().zip(&pivot_row) {
                        if pv != 0 {
                            *v = sub(*v, mul(f, pv));
                        }
                    }
                }
            }
            pivots.push((r, c));
            r += 1;
            if r == m.len() {
                break;
            }
        }
        pivots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shown(t: &Table, k: u64) -> Vec<Shown> {
        t.protect(k)
    }

    /// A periods × categories table with a row of totals over the range and a hidden
    /// population per period (categories partition it; the population is not shown).
    fn grid(values: &[Vec<u64>]) -> (Table, Vec<Vec<usize>>, Vec<usize>) {
        let mut t = Table::new();
        let rows: Vec<Vec<usize>> = values
            .iter()
            .map(|r| r.iter().map(|&v| t.cell(v)).collect())
            .collect();
        let cols = values[0].len();
        let totals: Vec<usize> = (0..cols)
            .map(|c| t.total(values.iter().map(|r| r[c]).sum()))
            .collect();
        for (c, &tot) in totals.iter().enumerate() {
            let parts: Vec<usize> = rows.iter().map(|r| r[c]).collect();
            t.sum(tot, &parts);
        }
        (t, rows, totals)
    }

    #[test]
    fn counts_from_one_to_threshold_minus_one_are_suppressed_and_zero_is_shown() {
        let mut t = Table::new();
        let cells: Vec<usize> = [0, 1, 4, 5, 17].iter().map(|&v| t.cell(v)).collect();
        let s = shown(&t, 5);
        assert_eq!(
            cells.iter().map(|&c| s[c]).collect::<Vec<_>>(),
            vec![
                Shown::Count(0),
                Shown::Below,
                Shown::Below,
                Shown::Count(5),
                Shown::Count(17)
            ]
        );
    }

    #[test]
    fn a_lone_suppressed_period_withholds_the_total_of_its_column() {
        // Column 0: 3 in one period and 10 in the other; the total 13 would give 3 away.
        let (t, rows, totals) = grid(&[vec![3, 20], vec![10, 30]]);
        let s = shown(&t, 5);
        assert_eq!(s[rows[0][0]], Shown::Below);
        assert_eq!(s[totals[0]], Shown::Withheld);
        assert_eq!(s[rows[1][0]], Shown::Count(10));
        assert_eq!(s[totals[1]], Shown::Count(50));
    }

    #[test]
    fn a_lone_suppressed_category_in_a_shared_population_withholds_a_second_category() {
        // Two partitions of one population: 3 + 9 = 7 + 5.
        let mut t = Table::new();
        let a = [t.cell(3), t.cell(9)];
        let b = [t.cell(7), t.cell(5)];
        t.same_sum(&a, &b);
        let s = shown(&t, 5);
        assert_eq!(s[a[0]], Shown::Below);
        // The smallest non-zero other count of that equation is withheld.
        assert_eq!(s[b[1]], Shown::Withheld);
        assert_eq!((s[a[1]], s[b[0]]), (Shown::Count(9), Shown::Count(7)));
    }

    #[test]
    fn two_suppressed_cells_that_must_add_up_to_two_are_protected_further() {
        // 1 + 1 = 2 with both "<5": each is 1. Something else must go.
        let mut t = Table::new();
        let a = [t.cell(1), t.cell(1), t.cell(8)];
        let b = [t.cell(10)];
        t.same_sum(&a, &b);
        let s = shown(&t, 5);
        assert_eq!((s[a[0]], s[a[1]]), (Shown::Below, Shown::Below));
        assert!(s[a[2]] == Shown::Withheld || s[b[0]] == Shown::Withheld);
    }

    #[test]
    fn a_zero_elsewhere_can_pin_a_count_through_a_hidden_one() {
        // limited_connectivity = at_risk + (excluded with limited), the last ≤ excluded.
        // With excluded = 0, limited = at_risk: 3 and 3.
        let mut t = Table::new();
        let at_risk = t.cell(3);
        let excluded = t.cell(0);
        let limited = t.cell(3);
        let excluded_limited = t.hidden(0);
        let excluded_other = t.hidden(0);
        t.sum(limited, &[at_risk, excluded_limited]);
        t.sum(excluded, &[excluded_limited, excluded_other]);
        let s = shown(&t, 5);
        assert_eq!((s[at_risk], s[limited]), (Shown::Below, Shown::Below));
        let mut big = Table::new();
        let at_risk = big.cell(3);
        let excluded = big.cell(0);
        let limited = big.cell(9);
        let el = big.hidden(6);
        let eo = big.hidden(0);
        // Not consistent with excluded = 0: keep the equations true to the data.
        big.sum(limited, &[at_risk, el]);
        let _ = (excluded, eo);
        assert_eq!(big.protect(5)[at_risk], Shown::Below);
    }

    /// Every assignment of the unknown cells, in 0..=cap (1..k−1 for `"<k"`), that agrees
    /// with what is shown: backtracking, checking each equation once its last unknown is set.
    fn solutions(t: &Table, s: &[Shown], k: u64, cap: u64) -> Vec<Vec<u64>> {
        let unknown: Vec<usize> = (0..t.len())
            .filter(|&c| !matches!(s[c], Shown::Count(_)))
            .collect();
        let pos = |c: usize| unknown.iter().position(|&u| u == c);
        // The equations to check after setting the i-th unknown.
        let mut due: Vec<Vec<usize>> = vec![Vec::new(); unknown.len() + 1];
        for (e, eq) in t.equations.iter().enumerate() {
            let last = eq.iter().filter_map(|&(c, _)| pos(c)).max();
            due[last.map_or(0, |l| l + 1)].push(e);
        }
        let mut vals: Vec<u64> = (0..t.len())
            .map(|c| match s[c] {
                Shown::Count(v) => v,
                _ => 0,
            })
            .collect();
        let holds = |vals: &[u64], e: usize| {
            t.equations[e]
                .iter()
                .map(|&(c, kk)| kk as i128 * vals[c] as i128)
                .sum::<i128>()
                == 0
        };
        let mut out = Vec::new();
        if !due[0].iter().all(|&e| holds(&vals, e)) {
            return out;
        }
        let mut stack = vec![0usize];
        // Iterative backtracking: stack[i] is the next value to try for unknown i.
        let lo = |c: usize| if s[c] == Shown::Below { 1 } else { 0 };
        let hi = |c: usize| if s[c] == Shown::Below { k - 1 } else { cap };
        if unknown.is_empty() {
            out.push(vals);
            return out;
        }
        stack[0] = lo(unknown[0]) as usize;
        while let Some(&next) = stack.last() {
            let i = stack.len() - 1;
            let c = unknown[i];
            if next as u64 > hi(c) {
                stack.pop();
                if let Some(top) = stack.last_mut() {
                    *top += 1;
                }
                continue;
            }
            vals[c] = next as u64;
            if due[i + 1].iter().all(|&e| holds(&vals, e)) {
                if i + 1 == unknown.len() {
                    out.push(vals.clone());
                    *stack.last_mut().unwrap() += 1;
                } else {
                    stack.push(lo(unknown[i + 1]) as usize);
                }
            } else {
                *stack.last_mut().unwrap() += 1;
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Brute force as the referee: for small tables (two periods × two categories, the
        /// totals, and a second partition of each period), every suppressed count can take at
        /// least two values among the integer solutions consistent with what is shown.
        #[test]
        fn no_suppressed_count_is_fixed_by_what_is_shown(
            v in proptest::collection::vec(0u64..9, 4),
            split in proptest::collection::vec(0u64..9, 2),
        ) {
            check_grid(vec![vec![v[0], v[1]], vec![v[2], v[3]]], split)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(150))]

        /// The same with three periods, and smaller counts so that more are suppressed.
        #[test]
        fn no_suppressed_count_is_fixed_in_three_periods(
            v in proptest::collection::vec(0u64..7, 6),
            split in proptest::collection::vec(0u64..7, 3),
        ) {
            check_grid(vec![vec![v[0], v[1]], vec![v[2], v[3]], vec![v[4], v[5]]], split)?;
        }
    }

    fn check_grid(values: Vec<Vec<u64>>, split: Vec<u64>) -> Result<(), TestCaseError> {
        {
            let k = 5;
            let (mut t, rows, _) = grid(&values);
            // A second partition of each period's population into two categories.
            for (r, row) in rows.iter().enumerate() {
                let pop = values[r][0] + values[r][1];
                let first = split[r].min(pop);
                let b = [t.cell(first), t.cell(pop - first)];
                t.same_sum(row, &b);
            }
            let s = t.protect(k);
            let unknown = s.iter().filter(|x| !matches!(x, Shown::Count(_))).count();
            if unknown > 10 {
                return Ok(()); // beyond what brute force checks quickly
            }
            let cap = values.iter().flatten().sum::<u64>() + 1;
            let sols = solutions(&t, &s, k, cap);
            prop_assert!(!sols.is_empty(), "the true values are a solution");
            for c in (0..t.len()).filter(|&c| s[c] == Shown::Below) {
                let first = sols[0][c];
                prop_assert!(
                    sols.iter().any(|x| x[c] != first),
                    "cell {} is fixed at {} by {:?}",
                    c,
                    first,
                    s
                );
            }
        }
        Ok(())
    }
}
