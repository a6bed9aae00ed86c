"""The compiled hot loops of the Monte-Carlo measurement (numba, cached on disk).

Two ways to draw episodes: ``simulate`` walks any MDP step by step; ``sample_paths`` draws each
episode's whole path at once when the paths are few (``montecarlo._Paths``) and ``paths_to_stats``
turns its per-path sums into the same statistics; ``paths_readout`` reads small batches out episode
by episode instead. Readings of one-episode batches keep sums per cell (``paths_readings``) or, for
short horizons, per path (``path_moments``; ``path_moments_running`` with running baselines).
``readout`` turns the statistics into every estimator's batch-mean gradient.

``simulate`` rolls out episodes and adds, per batch, step, state and action, the sufficient
statistics of every estimator: the visit count, the sum of the reward-to-go G_t, of the return R
and of each GAE advantage. The gradient estimates are linear in these sums (the score of a tabular
softmax policy depends only on (t, s, a)), so every estimator and every baseline that is constant
within a batch is recovered from them afterwards, with no per-estimator work in the loop.

Randomness comes from NumPy's PCG64 as raw 64-bit words, drawn in bulk by the caller: each word
gives two 32-bit uniforms. A step uses the high half for its action and the low half for a stochastic
transition, or else for uniform reward noise; whatever is still needed takes another word. Gaussian
noise comes from a second stream of standard normals. An episode that would run past the end of a
buffer is abandoned and replayed from its first number after a refill, so results do not depend on
buffer sizes.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from pgvar._lanes import LANES, QUAD, fma, lane_of, load, load4, maximum, select, splat, splat4, store, store4

NOISE_NONE, NOISE_UNIFORM, NOISE_GAUSSIAN = 0, 1, 2
COUNT, SUM_G, SUM_R, SUM_ADV = 0, 1, 2, 3  # channels of the statistics; GAE estimator g uses SUM_ADV + g
_TO_UNIT = 1.0 / 4294967296.0  # 2**-32


@njit(cache=True, nogil=True, inline="always")
def _draw(cdf_a, u):
    # branchless: count the cumulative probabilities below u (random branches would mispredict)
    index = 0
    for i in range(cdf_a.shape[0] - 1):
        index += u >= cdf_a[i]
    return index


@njit(cache=True, nogil=True)
def simulate(
    words, word_pos, normals, normal_pos,
    initial_cdf, initial_fixed, trans_cdf, trans_fixed, reward_sas, noise_kind, noise_scale_sa, terminal_s,
    gamma, max_steps, probs_cdf_psa, entropy_bonus_ps, gae_rho_g, gae_values_gts,
    episode, n_episodes, batch_size, step_words, stats_btsak, cells_t, states_t, rewards_t, next_t,
):  # fmt: skip
    """Simulate episodes ``episode`` .. ``n_episodes - 1``; episode i belongs to batch i // batch_size.

    A step uses at most ``step_words`` words (1, or 2 when a stochastic transition and uniform noise
    both need a half). Stops early, before finishing an episode, when ``words`` or ``normals`` could
    run out; it then
    returns the positions of that episode's first numbers, so the caller can refill and replay it.
    Steps t >= T (the accumulators' step axis) are added into the last step row.
    Returns (next episode, word_pos, normal_pos, episodes cut at ``max_steps`` without ending)."""
    n_batches, n_acc_steps, n_states, n_actions, n_channels = stats_btsak.shape
    # one flat row per (batch, step, state, action): the cell index is computed once per step
    stats_ck = stats_btsak.reshape((n_batches * n_acc_steps * n_states * n_actions, n_channels))
    per_step_policy = probs_cdf_psa.shape[0] > 1
    per_step_trans = trans_cdf.shape[0] > 1
    n_gae = gae_rho_g.shape[0]
    n_words = words.shape[0]
    cut = 0
    batch = episode // batch_size
    in_batch = episode - batch * batch_size  # a counter, not a division per episode
    while episode < n_episodes:
        first_word, first_normal = word_pos, normal_pos
        if word_pos >= n_words:
            break
        if initial_fixed >= 0:
            s = initial_fixed
        else:
            s = _draw(initial_cdf, (words[word_pos] >> 32) * _TO_UNIT)
            word_pos += 1
        length = 0
        total = 0.0  # the discounted return R, summed on the way
        discount = 1.0
        ran_out = False
        batch_cell = batch * n_acc_steps
        # check the buffers step by step only when a whole worst-case episode might not fit
        careful = word_pos + step_words * max_steps > n_words or (
            noise_kind == NOISE_GAUSSIAN and normal_pos + max_steps > normals.shape[0]
        )
        while True:
            if careful and (
                word_pos + step_words > n_words
                or (noise_kind == NOISE_GAUSSIAN and normal_pos >= normals.shape[0])
            ):
                ran_out = True
                break
            p = length if per_step_policy else 0
            word = words[word_pos]
            word_pos += 1
            a = _draw(probs_cdf_psa[p, s], (word >> 32) * _TO_UNIT)
            low = (word & 0xFFFFFFFF) * _TO_UNIT
            low_used = False
            q = length if per_step_trans else 0
            nxt = trans_fixed[q, s, a]
            if nxt < 0:
                nxt = _draw(trans_cdf[q, s, a], low)
                low_used = True
            r = reward_sas[s, a, nxt] + entropy_bonus_ps[p, s]
            if noise_kind == NOISE_UNIFORM:
                if low_used:
                    low = (words[word_pos] >> 32) * _TO_UNIT
                    word_pos += 1
                r += noise_scale_sa[s, a] * (low - 0.5)
            elif noise_kind == NOISE_GAUSSIAN:
                r += noise_scale_sa[s, a] * normals[normal_pos]
                normal_pos += 1
            cells_t[length] = ((batch_cell + min(length, n_acc_steps - 1)) * n_states + s) * n_actions + a
            rewards_t[length] = r
            if n_gae > 0:
                states_t[length] = s
                next_t[length] = nxt
            total += discount * r
            discount *= gamma
            length += 1
            s = nxt
            if terminal_s[s] or length == max_steps:
                break
        if ran_out:
            return episode, first_word, first_normal, cut
        if not terminal_s[s] and length == max_steps and max_steps > n_acc_steps:
            cut += 1
        ret = 0.0
        for t in range(length - 1, -1, -1):
            ret = rewards_t[t] + gamma * ret  # the reward-to-go G_t
            cell = cells_t[t]
            stats_ck[cell, COUNT] += 1.0
            stats_ck[cell, SUM_G] += ret
            stats_ck[cell, SUM_R] += total
        for g in range(n_gae):
            # A_t = delta_t + rho * A_{t+1}, delta_t = r_t + gamma V(s_{t+1}) - V(s_t)
            adv = 0.0
            for t in range(length - 1, -1, -1):
                tc = min(t, n_acc_steps - 1)
                tn = min(t + 1, n_acc_steps)
                value_next = gae_values_gts[g, tn, next_t[t]] if t + 1 < length else 0.0
                delta = rewards_t[t] + gamma * value_next - gae_values_gts[g, tc, states_t[t]]
                adv = delta + gae_rho_g[g] * adv
                stats_ck[cells_t[t], SUM_ADV + g] += adv
        episode += 1
        in_batch += 1
        if in_batch == batch_size:
            batch += 1
            in_batch = 0
    return episode, word_pos, normal_pos, cut


@njit(cache=True, nogil=True)
def sample_paths(uniforms, threshold_k, alias_k, path_stats_bkw, first, batch_size):
    """Draw whole paths for episodes ``first`` .. ``first + uniforms.shape[0] - 1``; episode j belongs
    to batch j // batch_size.

    ``uniforms`` (episodes, W) are 32-bit integers, each one uniform number. Episode i takes
    ``uniforms[i, 0]`` for its path k (Walker's alias method over the K paths: column c = floor(u K),
    kept when the fraction of u K is below ``threshold_k[c]``, else ``alias_k[c]``), then
    ``uniforms[i, 1 + t]`` for the uniform reward noise of step t (u - 1/2, scaled later; slots past
    the end of a shorter path are never read back). Adds 1 to ``path_stats_bkw[batch, k, 0]`` and
    the noise to ``path_stats_bkw[batch, k, 1 + t]``. Fixed slots keep episodes independent (none
    waits to learn where the next one's numbers start), and the noise is added four at a time with
    no loop to run: both let the CPU overlap episodes (about 2x faster than a loop over the steps)."""
    n_paths = threshold_k.shape[0]
    n_slots = uniforms.shape[1]
    rows = path_stats_bkw.reshape((path_stats_bkw.shape[0] * n_paths, n_slots))
    to_column = n_paths * _TO_UNIT
    batch, in_batch = first // batch_size, first % batch_size
    for i in range(uniforms.shape[0]):
        x = uniforms[i, 0] * to_column
        column = int(x)
        row = batch * n_paths + (column if x - column < threshold_k[column] else alias_k[column])
        rows[row, 0] += 1.0
        j = 1
        while j + 4 <= n_slots:
            rows[row, j] += uniforms[i, j] * _TO_UNIT - 0.5
            rows[row, j + 1] += uniforms[i, j + 1] * _TO_UNIT - 0.5
            rows[row, j + 2] += uniforms[i, j + 2] * _TO_UNIT - 0.5
            rows[row, j + 3] += uniforms[i, j + 3] * _TO_UNIT - 0.5
            j += 4
        left = n_slots - j
        if left == 3:
            rows[row, j] += uniforms[i, j] * _TO_UNIT - 0.5
            rows[row, j + 1] += uniforms[i, j + 1] * _TO_UNIT - 0.5
            rows[row, j + 2] += uniforms[i, j + 2] * _TO_UNIT - 0.5
        elif left == 2:
            rows[row, j] += uniforms[i, j] * _TO_UNIT - 0.5
            rows[row, j + 1] += uniforms[i, j + 1] * _TO_UNIT - 0.5
        elif left == 1:
            rows[row, j] += uniforms[i, j] * _TO_UNIT - 0.5
        in_batch += 1
        if in_batch == batch_size:
            batch += 1
            in_batch = 0


@njit(cache=True, nogil=True)
def paths_to_stats(
    path_stats_bkw, cell_kt, length_k, scale_kt, mean_g_kt, gamma, mean_adv_gkt, gae_rho_g, stats_btsak
):
    """Add per-path counts and noise sums (``path_stats_bkw[b, k]`` = count, then the unit noise summed
    per step) into the statistics ``simulate`` would have gathered.

    Every sum is affine in the rewards: over the n episodes of path k in a batch, the sum of G_t is
    n * (G_t at the mean rewards) + sum_{t' >= t} gamma^(t'-t) scale_t' noise_t'; the same with
    rho = gamma * lambda for a GAE advantage, and R = G_0."""
    n_batches, n_steps, n_states, n_actions, n_channels = stats_btsak.shape
    cells = n_steps * n_states * n_actions
    stats_ck = stats_btsak.reshape((n_batches * cells, n_channels))
    noisy = path_stats_bkw.shape[2] > 1
    noise_g_t = np.zeros(n_steps + 1)
    for b in range(n_batches):
        for k in range(path_stats_bkw.shape[1]):
            n = path_stats_bkw[b, k, 0]
            if n == 0.0:
                continue
            length = length_k[k]
            if noisy:
                noise_g_t[length] = 0.0  # paths end at different steps: no sum from a longer one
                for t in range(length - 1, -1, -1):
                    noise_g_t[t] = scale_kt[k, t] * path_stats_bkw[b, k, 1 + t] + gamma * noise_g_t[t + 1]
            total = n * mean_g_kt[k, 0] + noise_g_t[0]
            for t in range(length):
                cell = b * cells + cell_kt[k, t]
                stats_ck[cell, COUNT] += n
                stats_ck[cell, SUM_G] += n * mean_g_kt[k, t] + noise_g_t[t]
                stats_ck[cell, SUM_R] += total
            for g in range(gae_rho_g.shape[0]):
                acc = 0.0
                for t in range(length - 1, -1, -1):
                    if noisy:
                        acc = scale_kt[k, t] * path_stats_bkw[b, k, 1 + t] + gae_rho_g[g] * acc
                    stats_ck[b * cells + cell_kt[k, t], SUM_ADV + g] += n * mean_adv_gkt[g, k, t] + acc


WEIGHT_RETURN, WEIGHT_RTG, WEIGHT_GAE = 0, 1, 2


@njit(cache=True, nogil=True)
def paths_readout(
    uniforms, normals, threshold_k, alias_k, length_k, state_kt, scale_kt, mean_g_kt, gamma,
    param_kta, score_kta, at_mean_ekta, decay_e, scale_et, weight_kind_e, running_e,
    prior_g_t, prior_r_t, prior_n_t, n, first_batch, per_reading, sum_red, sumsq_re, count_ts, sum_g_ts,
    distinct_params,
):  # fmt: skip
    """Draw whole paths (as ``sample_paths``) and read every estimator out episode by episode: for
    small batches this is cheaper than summing per path and reading out per cell.

    Episode i belongs to batch first_batch + i // n, and batch b to reading r = b // per_reading:
    its batch-mean gradient g_b (E, D) is added into ``sum_red[r]`` and its squared norm per
    estimator into ``sumsq_re[r]`` (with ``per_reading`` 1, ``sum_red`` receives the batch means
    themselves, and ``sumsq_re`` nothing). ``normals`` (episodes, T) holds Gaussian reward noise, or is empty.

    One visit of (t, s, a) adds, in the components of the logits at (t, s), (w - b) (e_a - pi(.|s))
    + the entropy bonus's direct term: the read-out's formula for a single visit (see ``readout``).
    That is ``at_mean_ekta`` (the visit with w at the mean rewards and a fixed baseline) + m
    ``score_kta``, where m is the weight's noise less a running baseline. The weight's noise is the
    return's (R = G_0), or a suffix sum of the scaled noise decaying by ``decay_e`` (gamma for G_t,
    gamma lambda for a GAE advantage) times ``scale_et``. Running baselines of batch b use
    ``prior_*`` and batches before b only; ``prior_*``, ``count_ts`` and ``sum_g_ts`` are updated as
    in ``readout``. With N = 1 and no parameter visited twice on a path (``distinct_params``) each
    visit goes straight to the outputs; otherwise a batch is gathered in a small buffer first. Time,
    path, reading and logit index the arrays as unsigned integers (see ``paths_readings``).

    No helper function taking arrays is called in the loops: numba kept the reference counting of
    such a call here (two calls into its runtime per use), which cost more than the arithmetic."""
    n_episodes = uniforms.shape[0]
    n_estimators, n_params = sum_red.shape[1], sum_red.shape[2]
    n_paths, n_steps, n_actions = param_kta.shape
    any_running = False
    for e in range(n_estimators):
        any_running |= running_e[e] != 0
    direct = n == 1 and distinct_params
    squares = per_reading > 1  # one batch a reading: the batch means alone are asked for
    gaussian = normals.shape[0] > 0
    uniform = not gaussian and uniforms.shape[1] > 1
    to_column = n_paths * _TO_UNIT
    inv_n = 1.0 / n
    unit_t = np.zeros(n_steps)  # the episode's unit reward noise per step
    mean_g_t = np.zeros(n_steps)  # the running means batch b sees
    mean_r_t = np.zeros(n_steps)
    # a batch's own returns reach the running sums when it is done; with N = 1 they go straight there
    batch_g_t = prior_g_t if n == 1 else np.zeros(n_steps)
    batch_r_t = prior_r_t if n == 1 else np.zeros(n_steps)
    batch_n_t = prior_n_t if n == 1 else np.zeros(n_steps)
    batch_ed = np.zeros((n_estimators, n_params))
    paths_j = np.zeros(n, dtype=np.int64)  # the batch's paths: which components it touched
    one = np.uint64(1)
    r = np.uint64(first_batch // per_reading)
    left = per_reading - first_batch % per_reading  # batches until reading r is complete
    for b in range((n_episodes + n - 1) // n):
        if n > 1:
            for t in range(n_steps - 1, -1, -1):
                inverse = 1.0 / prior_n_t[t] if prior_n_t[t] > 0 else 0.0
                mean_g_t[t] = prior_g_t[t] * inverse
                mean_r_t[t] = prior_r_t[t] * inverse
                batch_g_t[t] = batch_r_t[t] = batch_n_t[t] = 0.0
        if left == 0:
            r += one
            left = per_reading
        left -= 1
        episodes = min(n, n_episodes - b * n)
        for j in range(episodes):
            i = b * n + j
            x = uniforms[i, 0] * to_column
            column = int(x)
            path = column if x - column < threshold_k[column] else alias_k[column]
            paths_j[j] = path
            k = np.uint64(path)
            length = length_k[k]
            noise_g = 0.0  # the noise in G_t, t walking backwards; R = G_0
            for step in range(length - 1, -1, -1):
                t = np.uint64(step)
                if gaussian:
                    unit = normals[i, t]
                elif uniform:
                    unit = uniforms[i, one + t] * _TO_UNIT - 0.5
                else:
                    unit = 0.0
                unit_t[t] = unit
                noise_g = scale_kt[k, t] * unit + gamma * noise_g
                ret = mean_g_kt[k, t] + noise_g
                if n == 1 and any_running:  # the means before this episode's returns join them
                    inverse = 1.0 / prior_n_t[t] if prior_n_t[t] > 0 else 0.0
                    mean_g_t[t] = prior_g_t[t] * inverse
                    mean_r_t[t] = prior_r_t[t] * inverse
                batch_g_t[t] += ret
                batch_n_t[t] += 1.0
                count_ts[t, np.uint64(state_kt[k, t])] += 1.0
                sum_g_ts[t, np.uint64(state_kt[k, t])] += ret
            total = mean_g_kt[k, np.uint64(0)] + noise_g
            for step in range(length - 1, -1, -1):
                batch_r_t[np.uint64(step)] += total
            for e in range(n_estimators):
                kind, running, decay = weight_kind_e[e], running_e[e], decay_e[e]
                noise_w = 0.0
                square = 0.0
                for step in range(length - 1, -1, -1):
                    t = np.uint64(step)
                    if kind == WEIGHT_RETURN:
                        moved = noise_g
                    else:
                        noise_w = scale_kt[k, t] * unit_t[t] + decay * noise_w
                        moved = scale_et[e, t] * noise_w
                    if running == 1:
                        moved -= mean_g_t[t] * (scale_et[e, t] if kind == WEIGHT_RTG else 1.0)
                    elif running == 2:
                        moved -= mean_r_t[t]
                    for a in range(n_actions):
                        value = at_mean_ekta[e, k, t, a] + moved * score_kta[k, t, a]
                        p = np.uint64(param_kta[k, t, a])
                        if direct:
                            sum_red[r, e, p] += value
                            square += value * value
                        else:
                            batch_ed[e, p] += value
                if direct and squares:
                    sumsq_re[r, e] += square
        if not direct:
            for e in range(n_estimators):
                square = 0.0
                for j in range(episodes):  # a component touched twice is read once, then found zero
                    k = paths_j[j]
                    for t in range(length_k[k]):
                        for a in range(n_actions):
                            p = param_kta[k, t, a]
                            value = batch_ed[e, p] * inv_n
                            batch_ed[e, p] = 0.0
                            sum_red[r, e, p] += value
                            square += value * value
                if squares:
                    sumsq_re[r, e] += square
        if n > 1:
            for t in range(n_steps - 1, -1, -1):
                prior_g_t[t] += batch_g_t[t]
                prior_r_t[t] += batch_r_t[t]
                prior_n_t[t] += batch_n_t[t]


@njit(cache=True, nogil=True)
def paths_readings(
    uniforms, normals, threshold_k, alias_k, length_k, cell_kt, scale_kt, mean_g_kt, gamma, score_sq_kt,
    lane_tables, n_estimators, probs_tsa, direct_tsa, index_tsa, offsets_etsa, prior_g_t, prior_r_t,
    prior_n_t, first_batch, per_reading, sum_red, sumsq_re,
):  # fmt: skip
    """Batches of one episode each, read out a reading at a time through sums per cell: what
    ``paths_readout`` gives with N = 1 (up to rounding), when no path visits a logit twice.

    Episode i is batch first_batch + i, in reading r = batch // per_reading. Over a reading, the sum
    of the estimates is what ``readout`` makes of the visits and summed weights per (step, state,
    action) cell (``cell_kt``): the weight at the mean rewards plus m_t, the weight's noise less a
    running baseline (see ``paths_readout``). So an episode adds one weight per estimator and step
    into its cell, and the cells are read out into ``sum_red[r]`` when the reading (or the call)
    ends. With distinct logits an episode's squared norm is square + sum_t m_t (2 cross + m_t
    ``score_sq_kt``), added into ``sumsq_re[r]``.

    The estimators are the lanes of SIMD vectors (``pgvar._lanes``), LANES at a time, followed by
    three more "weights": 1 (the cell's visits), G_t and R (what the running sums ``prior_*`` add up).
    ``lane_tables`` (see ``montecarlo._lane_tables``) holds their coefficients with the lane
    innermost, padded with zeros. The running sums are updated after every episode where a running
    baseline reads them (after the episode's last lanes have read them), else once a reading, from
    those lanes.

    Why it looks the way it does: one backward pass over the episode's steps per vector of lanes,
    with the running means as scalars there, after a forward pass for the noise in R (which the
    return's lanes need at every step): a pass of its own for the running sums, with the means kept
    in arrays for the lanes to read, cost 15% more. Loads that do not change along the pass are taken
    out of it by hand (LLVM cannot move them past the stores into ``weights_cl``). Time and path
    index 2-D arrays as unsigned integers: numba then indexes without checking for negative indices
    (which took a fifth of the time)."""
    (decay_l, is_return_l, minus_r_l, scale_tl, minus_g_tl, square_kl, cross2_ktl, weight_ktl) = lane_tables
    n_episodes = uniforms.shape[0]
    n_paths = threshold_k.shape[0]
    n_steps, n_states, n_actions = probs_tsa.shape
    n_lanes = decay_l.shape[0]  # estimators, then the visits, G_t and R lanes, padded to whole vectors
    visits_lane, g_lane, r_lane = n_estimators, n_estimators + 1, n_estimators + 2
    any_running = False
    for lane in range(n_lanes):
        any_running |= minus_r_l[lane] != 0.0
        for t in range(n_steps):
            any_running |= minus_g_tl[t, lane] != 0.0
    gaussian = normals.shape[0] > 0
    uniform = not gaussian and uniforms.shape[1] > 1
    to_column = n_paths * _TO_UNIT
    one = np.uint64(1)
    zero = splat(0.0)
    noise_t = np.zeros(n_steps)  # the episode's scaled reward noise per step
    weights_cl = np.zeros((n_steps * n_states * n_actions, n_lanes))  # per cell, over the reading so far
    squares_l = np.zeros(n_lanes)
    last_lane = n_lanes - LANES
    r = np.uint64(first_batch // per_reading)
    left = per_reading - first_batch % per_reading  # batches until reading r is complete
    for i in range(n_episodes):
        x = uniforms[i, 0] * to_column
        column = int(x)
        path = column if x - column < threshold_k[column] else alias_k[column]
        k = np.uint64(path)
        length = length_k[k]
        noise_r = 0.0  # the noise in R = G_0: the return's lanes and the running sum of R need it first
        discount = 1.0
        for step in range(length):
            t = np.uint64(step)
            if gaussian:
                unit = normals[i, t]
            elif uniform:
                unit = uniforms[i, one + t] * _TO_UNIT - 0.5
            else:
                unit = 0.0
            noise_t[t] = scale_kt[k, t] * unit
            noise_r += discount * noise_t[t]
            discount *= gamma
        total = mean_g_kt[k, np.uint64(0)] + noise_r
        for lane in range(0, n_lanes, LANES):
            decay, is_return, minus_r = load(decay_l, lane), load(is_return_l, lane), load(minus_r_l, lane)
            noise_r_l = splat(noise_r)
            noise_w = zero  # the noise in each lane's weight, t walking backwards
            noise_g = 0.0  # the noise in G_t
            square = load(square_kl, path * n_lanes + lane)
            for step in range(length - 1, -1, -1):
                t = np.uint64(step)
                noise_g = noise_t[t] + gamma * noise_g
                noise_w = fma(decay, noise_w, splat(noise_t[t]))
                moved = select(is_return, noise_r_l, load(scale_tl, step * n_lanes + lane) * noise_w)
                # the running means before this episode joins them (after the last lanes read them)
                if any_running:
                    inverse = 1.0 / max(prior_n_t[t], 1.0)  # the sums are 0 while the count is
                    moved = (
                        moved
                        - load(minus_g_tl, step * n_lanes + lane) * splat(prior_g_t[t] * inverse)
                        - minus_r * splat(prior_r_t[t] * inverse)
                    )
                    if lane == last_lane:
                        prior_g_t[t] += mean_g_kt[k, t] + noise_g
                        prior_r_t[t] += total
                        prior_n_t[t] += 1.0
                at = (path * n_steps + step) * n_lanes + lane
                square = fma(moved, fma(moved, splat(score_sq_kt[k, t]), load(cross2_ktl, at)), square)
                cell = cell_kt[k, t] * n_lanes + lane
                store(weights_cl, cell, load(weights_cl, cell) + load(weight_ktl, at) + moved)
            store(squares_l, lane, load(squares_l, lane) + square)
        left -= 1
        if left == 0 or i == n_episodes - 1:  # read the cells out into reading r, as ``readout`` does
            for e in range(n_estimators):
                sumsq_re[r, e] += squares_l[e]
            for t in range(n_steps):
                for state in range(n_states):
                    first = (t * n_states + state) * n_actions
                    visits = 0.0
                    for a in range(n_actions):
                        visits += weights_cl[first + a, visits_lane]
                    if visits == 0.0:
                        continue
                    if not any_running:  # the running sums, a reading at a time
                        prior_n_t[t] += visits
                        for a in range(n_actions):
                            prior_g_t[t] += weights_cl[first + a, g_lane]
                            prior_r_t[t] += weights_cl[first + a, r_lane]
                    for e in range(n_estimators):
                        summed = 0.0
                        for a in range(n_actions):
                            summed += weights_cl[first + a, e]
                        for a in range(n_actions):
                            p = probs_tsa[t, state, a]
                            sum_red[r, e, np.uint64(index_tsa[t, state, a])] += (
                                weights_cl[first + a, e]
                                - p * summed
                                - offsets_etsa[e, t, state, a]
                                * (weights_cl[first + a, visits_lane] - p * visits)
                                + direct_tsa[t, state, a] * visits
                            )
            weights_cl[:] = 0.0
            squares_l[:] = 0.0
            r += one
            left = per_reading


def _unit(value):
    """One reward-noise number as the unit noise it stands for: a 32-bit uniform u gives u 2^-32 - 1/2,
    a standard normal itself (resolved at compile time from the array's type: see ``path_moments``)."""
    return value * _TO_UNIT - 0.5 if isinstance(value, np.uint32) else float(value)


@overload(_unit, inline="always")
def _unit_for_type(value):
    if isinstance(value, types.Integer):
        return lambda value: value * _TO_UNIT - 0.5
    return lambda value: value


@njit(cache=True, nogil=True)
def path_moments(
    uniforms, noise_it, steps_witness, estimators_witness, threshold_k, alias_k, coef_ekw, first_batch,
    per_reading, sums_rkw, squares_rke,
):  # fmt: skip
    """Batches of one episode each, where no estimator has a running baseline: per reading and path,
    the count and the unit reward noise summed per step (``sums_rkw[r, k]`` = n, then sum u_t), and
    the episodes' squared gradient norms per estimator (``squares_rke``). ``montecarlo._Moments``
    turns them into the readings.

    Episode i is batch first_batch + i; its reading is the call's r-th (r = 0 for the reading of
    ``first_batch``). It takes its path from ``uniforms[i, 0]`` (as ``sample_paths``) and its unit
    noise from ``noise_it[i]`` (32-bit uniforms or standard normals, T columns; none without noise;
    columns past the end of a shorter path have zero coefficients). With the logits of a path all
    distinct and no running baseline, an episode's gradient is c + A u for every estimator, so its
    squared norm is coef . (1, u_0 .. u_{T-1}, then u_t u_j for j <= t, row by row): ``coef_ekw``.

    ``steps_witness`` and ``estimators_witness`` are tuples of T and E zeros: numba compiles the kernel
    for each length, so the loops over steps and estimators have constant counts and are unrolled
    (twice as fast as the same loops with counts known only at run time); the noise's type picks its
    conversion the same way."""
    n_steps = len(steps_witness)
    n_estimators = len(estimators_witness)
    n_paths = threshold_k.shape[0]
    noisy = noise_it.shape[1] > 0
    to_column = n_paths * _TO_UNIT
    one = np.uint64(1)
    first_pair = np.uint64(1 + n_steps)
    r = np.uint64(0)
    left = per_reading - first_batch % per_reading  # batches until reading r is complete
    for i in range(uniforms.shape[0]):
        if left == 0:
            r += one
            left = per_reading
        left -= 1
        x = uniforms[i, 0] * to_column
        column = int(x)
        k = np.uint64(column if x - column < threshold_k[column] else alias_k[column])
        sums_rkw[r, k, 0] += 1.0
        if noisy:
            for step in range(n_steps):
                t = np.uint64(step)
                sums_rkw[r, k, one + t] += _unit(noise_it[i, t])
        for estimator in range(n_estimators):
            e = np.uint64(estimator)
            square = coef_ekw[e, k, 0]
            if noisy:
                w = first_pair
                for step in range(n_steps):
                    t = np.uint64(step)
                    partial = coef_ekw[e, k, one + t]
                    for before in range(step + 1):
                        partial += coef_ekw[e, k, w] * _unit(noise_it[i, np.uint64(before)])
                        w += one
                    square += partial * _unit(noise_it[i, t])
            squares_rke[r, k, e] += square


@njit(cache=True, nogil=True)
def path_moments_running(
    uniforms, noise_it, steps_witness, blocks_witness, threshold_k, alias_k, scale_kt, gamma_t, decay_bl,
    weight_btl, return_bl, minus_g_btl, minus_r_bl, cross2_kbtl, score_sq_kt, running_kjl, alive_kl,
    mean_row_kt, prior_xl, first_batch, per_reading, sums_rx, squares_rbl,
):  # fmt: skip
    """Batches of one episode each, with running baselines: per reading, each path's count and unit
    reward noise summed per step (``sums_rx[r, k (1 + T) + w]`` = n, then sum u_t, as ``path_moments``
    keeps them), then the running means of G_t and of R summed per visited (step, state, action) cell
    (``sums_rx[r, mean_row_kt[k, t] + 0 or 1]``; steps after a path ended add into a row of their
    own); per reading, the squared gradient norms less their part at the mean rewards, QUAD estimators
    at a time (``squares_rbl``). ``montecarlo._RunningMoments`` turns them into the readings.

    Episode i, its path and its unit noise are as in ``path_moments``. A running mean changes with
    every episode, so the episode's squared norm is summed as it is drawn: with distinct logits it is
    its value at the mean rewards plus sum_t y_t (2 cross_t + |score_t|^2 y_t), where y_t = (the
    weight's noise) - (the running baseline) for each estimator, the estimators being the lanes of
    4-wide vectors (blocks of ``blocks_witness``) and t walking backwards so that G_t's noise (and a
    GAE advantage's) is one multiply-add a step. The running sums (``prior_xl``: G_t, R and the count,
    QUAD steps each; T <= QUAD) stay in registers: the means are read before an episode joins them.

    ``steps_witness`` and ``blocks_witness`` are tuples of T and of ceil(E / 4) zeros (see
    ``path_moments``)."""
    n_steps = len(steps_witness)
    n_blocks = len(blocks_witness)
    n_paths = threshold_k.shape[0]
    noisy = noise_it.shape[1] > 0
    to_column = n_paths * _TO_UNIT
    one = np.uint64(1)
    unit_t = np.zeros(n_steps)
    noise_t = np.zeros(n_steps)  # the episode's scaled reward noise per step
    ones = splat4(1.0)
    zero = splat4(0.0)
    prior_g, prior_r, prior_n = load4(prior_xl, 0), load4(prior_xl, QUAD), load4(prior_xl, 2 * QUAD)
    row_width = np.uint64(1 + n_steps)  # a path's count and noise sums
    r = np.uint64(0)
    left = per_reading - first_batch % per_reading  # batches until reading r is complete
    for i in range(uniforms.shape[0]):
        if left == 0:
            r += one
            left = per_reading
        left -= 1
        x = uniforms[i, 0] * to_column
        column = int(x)
        path = column if x - column < threshold_k[column] else alias_k[column]
        k = np.uint64(path)
        row = k * row_width
        sums_rx[r, row] += 1.0
        noise_r = 0.0  # the noise in R
        if noisy:
            for step in range(n_steps):
                t = np.uint64(step)
                unit_t[t] = _unit(noise_it[i, t])
                sums_rx[r, row + one + t] += unit_t[t]
                noise_t[t] = scale_kt[k, t] * unit_t[t]
                noise_r += gamma_t[t] * noise_t[t]
        # the running means before this episode joins them (the sums are 0 while the count is)
        inverse = ones / maximum(prior_n, ones)
        mean_g, mean_r = prior_g * inverse, prior_r * inverse
        for step in range(n_steps):
            t = np.uint64(step)
            cell = np.uint64(mean_row_kt[k, t])
            sums_rx[r, cell] += lane_of(mean_g, step)
            sums_rx[r, cell + one] += lane_of(mean_r, step)
        # this episode's G_t and R per step (zero after its path ended): at the mean rewards plus noise
        at = path * (n_steps + 1) * 2 * QUAD
        g, total = load4(running_kjl, at), load4(running_kjl, at + QUAD)
        for step in range(n_steps):
            unit = splat4(unit_t[np.uint64(step)])
            at += 2 * QUAD
            g, total = fma(unit, load4(running_kjl, at), g), fma(unit, load4(running_kjl, at + QUAD), total)
        prior_g, prior_r = prior_g + g, prior_r + total
        prior_n = prior_n + load4(alive_kl, path * QUAD)
        noise_r_l = splat4(noise_r)
        for block in range(n_blocks):
            decay = load4(decay_bl, block * QUAD)
            returned = load4(return_bl, block * QUAD) * noise_r_l  # R's noise, where R is the weight
            minus_r = load4(minus_r_bl, block * QUAD)
            noise_w = zero  # G_t's or a GAE advantage's noise, t walking backwards
            square = zero
            for step in range(n_steps - 1, -1, -1):
                t = np.uint64(step)
                noise_w = fma(decay, noise_w, splat4(noise_t[t]))
                at = (block * n_steps + step) * QUAD
                y = fma(load4(weight_btl, at), noise_w, returned)
                baseline = load4(minus_g_btl, at) * splat4(lane_of(mean_g, step))
                y = y - baseline - minus_r * splat4(lane_of(mean_r, step))
                cross2 = load4(cross2_kbtl, ((path * n_blocks + block) * n_steps + step) * QUAD)
                square = fma(y, fma(splat4(score_sq_kt[k, t]), y, cross2), square)
            at = (r * n_blocks + block) * QUAD
            store4(squares_rbl, at, load4(squares_rbl, at) + square)
    store4(prior_xl, 0, prior_g)
    store4(prior_xl, QUAD, prior_r)
    store4(prior_xl, 2 * QUAD, prior_n)


@njit(cache=True, nogil=True)
def readout(
    stats_btsak,
    probs_tsa,
    direct_tsa,
    index_tsa,
    weight_kind_e,
    gae_e,
    running_e,
    scale_et,
    offsets_etsa,
    prior_g_t,
    prior_r_t,
    prior_n_t,
    n,
    grads_ebd,
    count_ts,
    sum_g_ts,
):
    """Batch-mean gradients from the sufficient statistics, for every estimator (see
    ``montecarlo.batch_gradients``). The running means of batch b use ``prior_*`` and batches before
    b only; ``prior_*`` are updated in place with every batch, and ``count_ts``, ``sum_g_ts`` total
    the visits and reward-to-go per (step, state)."""
    n_batches, n_steps, n_states, n_actions, _ = stats_btsak.shape
    n_estimators = weight_kind_e.shape[0]
    weights_a = np.zeros(n_actions)
    batch_g_t = np.zeros(n_steps)
    batch_r_t = np.zeros(n_steps)
    batch_n_t = np.zeros(n_steps)
    inv_n = 1.0 / n
    for b in range(n_batches):
        batch_g_t[:] = 0.0
        batch_r_t[:] = 0.0
        batch_n_t[:] = 0.0
        for t in range(n_steps):
            inverse = 1.0 / prior_n_t[t] if prior_n_t[t] > 0 else 0.0  # one division, not two
            mean_g = prior_g_t[t] * inverse
            mean_r = prior_r_t[t] * inverse
            for s in range(n_states):
                visits = 0.0
                for a in range(n_actions):
                    visits += stats_btsak[b, t, s, a, COUNT]
                if visits == 0.0:
                    continue
                for a in range(n_actions):
                    batch_g_t[t] += stats_btsak[b, t, s, a, SUM_G]
                    batch_r_t[t] += stats_btsak[b, t, s, a, SUM_R]
                    sum_g_ts[t, s] += stats_btsak[b, t, s, a, SUM_G]
                batch_n_t[t] += visits
                count_ts[t, s] += visits
                for e in range(n_estimators):
                    kind = weight_kind_e[e]
                    scale = scale_et[e, t]
                    total = 0.0
                    for a in range(n_actions):
                        if kind == WEIGHT_RETURN:
                            w = stats_btsak[b, t, s, a, SUM_R]
                        elif kind == WEIGHT_RTG:
                            w = scale * stats_btsak[b, t, s, a, SUM_G]
                        else:
                            w = scale * stats_btsak[b, t, s, a, SUM_ADV + gae_e[e]]
                        weights_a[a] = w
                        total += w
                    running = running_e[e]
                    for a in range(n_actions):
                        if running == 1:
                            base = mean_g * (scale if kind == WEIGHT_RTG else 1.0)
                        elif running == 2:
                            base = mean_r
                        else:
                            base = offsets_etsa[e, t, s, a]
                        p = probs_tsa[t, s, a]
                        value = (
                            weights_a[a]
                            - p * total
                            - base * (stats_btsak[b, t, s, a, COUNT] - p * visits)
                            + direct_tsa[t, s, a] * visits
                        )
                        grads_ebd[e, b, index_tsa[t, s, a]] += value * inv_n
        for t in range(n_steps):
            prior_g_t[t] += batch_g_t[t]
            prior_r_t[t] += batch_r_t[t]
            prior_n_t[t] += batch_n_t[t]
