"""Compiled hot loop of the Monte-Carlo measurement (numba, cached on disk).

One call simulates episodes in order, each from its own slice of two random streams (uniforms
for actions, transitions and uniform noise; standard normals for Gaussian noise), and adds every
estimator's single-episode gradient into its batch sum. It stops early, before an episode that
might run out of random numbers, and reports where it stopped; the caller refills the buffers
and calls again, so the numbers do not depend on how the work is chunked.
"""

from __future__ import annotations

from numba import njit

NOISE_NONE, NOISE_UNIFORM, NOISE_GAUSSIAN = 0, 1, 2
WEIGHT_RETURN, WEIGHT_RTG, WEIGHT_GAE = 0, 1, 2


@njit(cache=True)
def _draw(cdf, u):
    n = cdf.shape[0]
    for i in range(n - 1):
        if u < cdf[i]:
            return i
    return n - 1


@njit(cache=True)
def simulate_batches(
    # the MDP
    initial_cdf,
    initial_fixed,
    trans_cdf,
    trans_fixed,
    reward_sas,
    noise_kind,
    noise_scale_sa,
    terminal_s,
    gamma,
    max_steps,
    unbounded,
    # the policy (tables per step when per-step logits, else one table)
    probs_psa,
    probs_cdf_psa,
    index_psa,
    entropy_ps,
    entropy_grad_psa,
    beta,
    # the estimators
    weight_kind_e,
    rho_e,
    scaled_e,
    running_e,
    offsets_etsa,
    values_ets,
    # where we are
    episode_start,
    episode_stop,
    warmup,
    batch_size,
    uniforms,
    uniform_pos,
    normals,
    normal_pos,
    # outputs / state
    sums_emd,
    run_sum_g_t,
    run_sum_r_t,
    run_count_t,
    pending_g_t,
    pending_r_t,
    pending_count_t,
    states_t,
    actions_t,
    rewards_t,
    returns_t,
    work_t,
):
    n_estimators = weight_kind_e.shape[0]
    n_actions = probs_psa.shape[2]
    per_step_policy = probs_psa.shape[0] > 1
    per_step_trans = trans_cdf.shape[0] > 1
    need_per_step = 3
    episode = episode_start
    truncated = 0
    while episode < episode_stop:
        if uniform_pos + 1 + need_per_step * max_steps > uniforms.shape[0]:
            break
        if noise_kind == NOISE_GAUSSIAN and normal_pos + max_steps > normals.shape[0]:
            break
        # -- simulate one episode
        if initial_fixed >= 0:
            s = initial_fixed
        else:
            s = _draw(initial_cdf, uniforms[uniform_pos])
            uniform_pos += 1
        length = 0
        while True:
            p = length if per_step_policy else 0
            a = _draw(probs_cdf_psa[p, s], uniforms[uniform_pos])
            uniform_pos += 1
            q = length if per_step_trans else 0
            nxt = trans_fixed[q, s, a]
            if nxt < 0:
                nxt = _draw(trans_cdf[q, s, a], uniforms[uniform_pos])
                uniform_pos += 1
            r = reward_sas[s, a, nxt]
            if noise_kind == NOISE_UNIFORM:
                r += noise_scale_sa[s, a] * (uniforms[uniform_pos] - 0.5)
                uniform_pos += 1
            elif noise_kind == NOISE_GAUSSIAN:
                r += noise_scale_sa[s, a] * normals[normal_pos]
                normal_pos += 1
            r += beta * entropy_ps[p, s]
            states_t[length] = s
            actions_t[length] = a
            rewards_t[length] = r
            length += 1
            s = nxt
            if terminal_s[s] or length == max_steps:
                break
        if unbounded and not terminal_s[s]:
            truncated += 1
        # -- reward-to-go
        g = 0.0
        for t in range(length - 1, -1, -1):
            g = rewards_t[t] + gamma * g
            returns_t[t] = g
        total = returns_t[0]
        if episode >= warmup:
            batch = (episode - warmup) // batch_size
            for e in range(n_estimators):
                kind = weight_kind_e[e]
                if kind == WEIGHT_GAE:
                    adv = 0.0
                    for t in range(length - 1, -1, -1):
                        if running_e[e] > 0:
                            v_now = _running_mean(run_sum_g_t, run_count_t, t)
                            v_next = _running_mean(run_sum_g_t, run_count_t, t + 1) if t + 1 < length else 0.0
                        else:
                            v_now = values_ets[e, t, states_t[t]]
                            v_next = values_ets[e, t + 1, states_t[t + 1]] if t + 1 < length else 0.0
                        adv = rewards_t[t] + gamma * v_next - v_now + rho_e[e] * adv
                        work_t[t] = adv
                scale = 1.0
                for t in range(length):
                    st = states_t[t]
                    p = t if per_step_policy else 0
                    if kind == WEIGHT_RETURN:
                        weight = total
                    elif kind == WEIGHT_RTG:
                        weight = scale * returns_t[t]
                    else:
                        weight = scale * work_t[t]
                    running = running_e[e]
                    if kind == WEIGHT_GAE:
                        base = 0.0  # GAE takes its baseline as the value function, above
                    elif running == 1:
                        base = _running_mean(run_sum_g_t, run_count_t, t)
                        if kind == WEIGHT_RTG:
                            base *= scale
                    elif running == 2:
                        base = _running_mean(run_sum_r_t, run_count_t, t)
                    else:
                        base = 0.0
                    direct = beta * gamma**t
                    for b in range(n_actions):
                        psi = weight - base - offsets_etsa[e, t, st, b]
                        score = (1.0 if b == actions_t[t] else 0.0) - probs_psa[p, st, b]
                        sums_emd[e, batch, index_psa[p, st, b]] += (
                            psi * score + direct * entropy_grad_psa[p, st, b]
                        )
                    if scaled_e[e]:
                        scale *= gamma
        # -- running statistics: used from the next batch on, never by the batch that made them
        for t in range(length):
            pending_g_t[t] += returns_t[t]
            pending_r_t[t] += total
            pending_count_t[t] += 1.0
        episode += 1
        if episode <= warmup or (episode - warmup) % batch_size == 0:
            for t in range(max_steps):
                if pending_count_t[t] == 0.0:
                    break
                run_sum_g_t[t] += pending_g_t[t]
                run_sum_r_t[t] += pending_r_t[t]
                run_count_t[t] += pending_count_t[t]
                pending_g_t[t] = 0.0
                pending_r_t[t] = 0.0
                pending_count_t[t] = 0.0
    return episode, uniform_pos, normal_pos, truncated


@njit(cache=True)
def _running_mean(sums, counts, t):
    if counts[t] > 0.0:
        return sums[t] / counts[t]
    return 0.0
