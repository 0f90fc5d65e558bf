"""Stage 3: PPO against the reward model (InstructGPT's objective).

Each iteration (the loop itself is ``training/on_policy_loop.py``, shared with GRPO):
  1. rollouts: sample one response per prompt from the policy (batched, KV-cached);
  2. score: the reward model's score at the last response token (plus a penalty when the
     response never emits EOS), minus ``kl_coef`` x the per-token KL(policy || SFT reference);
  3. advantages: GAE(gamma, lambda) with the critic's values, whitened;
  4. update: ``ppo_epochs`` passes over minibatches with the PPO-Clip (or PPO-Penalty) policy
     loss, a clipped value loss and, for PPO-ptx, a language-model loss on SFT data;
  5. adapt the KL coefficient toward its target (Ziegler et al. 2019).

Models: the policy starts from the SFT model, the frozen reference is the SFT model, the frozen
reward model scores, and the critic starts from the reward model (or the policy).
"""

from __future__ import annotations

import torch

from rlhf.algorithms.kl_control import AdaptivePenaltyCoef, make_kl_controller
from rlhf.algorithms.rewards import RunningMoments
from rlhf.config import PPOConfig
from rlhf.data.artifacts import load_split, manifest_checksum
from rlhf.modeling import lora, models
from rlhf.modeling.encoding import encode_conversation
from rlhf.modeling.forward import TokenValues
from rlhf.modeling.packed import PackedEncoded
from rlhf.stages.on_policy import (
    HISTORY_FILE,
    ON_POLICY_WEIGHT_DECAY,
    ResponseRewards,
    check_reward_source,
    load_policies,
    load_prompts,
    publish_policy,
)
from rlhf.stages.ppo_experience import PPOExperience, PPOModels, make_experience, ppo_loss, ptx_loss
from rlhf.stages.rollout_sampler import RolloutSampler
from rlhf.stages.specs import ModelOutputs, PPOInputs
from rlhf.stages.training_start import start_training
from rlhf.tracking import Tracker
from rlhf.training.engine import build_engine, sharded_loading
from rlhf.training.on_policy_loop import (
    Experience,
    OnPolicyAlgorithm,
    Trained,
    result_metrics,
    train_on_policy,
)

__all__ = ["HISTORY_FILE", "PPOInputs", "ModelOutputs", "run"]


def run(
    config: PPOConfig, inputs: PPOInputs, outputs: ModelOutputs, tracker: Tracker | None = None
) -> dict[str, float]:
    # The config checked its own values when it was built; the inputs are checked here, all
    # before the four models load.
    check_reward_source(inputs.reward_model, config)
    if config.ptx_coef > 0 and not inputs.sft_data:
        raise ValueError("ptx_coef > 0 needs the sft data (PPO-ptx mixes in its LM loss)")
    tracker, started, device, ckpt_root, fingerprint, latest, _ = start_training(
        "ppo", config, inputs, outputs.model, tracker
    )

    # --- models: policy and frozen reference (SFT), critic, frozen reward model ------------
    loaded = load_policies(inputs.sft_model, config, device)
    critic_source = inputs.reward_model if config.critic_init == "reward" else inputs.sft_model
    with sharded_loading(config.distributed):
        critic = models.load_reward_model(
            critic_source, config.dtype, config.trust_remote_code,
            lora.quantization_config(config.lora, config.dtype),
        )  # fmt: skip
    critic.config.pad_token_id = loaded.tokenizer.pad_token_id
    critic = lora.apply_lora(critic, config.lora)  # the one lora: config trains both models
    critic.to(device)
    rewards_source = ResponseRewards(inputs.reward_model, config, device)

    # --- data: prompts, and SFT conversations for PPO-ptx -----------------------------------
    prompts = load_prompts(inputs.prompts, loaded.tokenizer, config)
    max_length = config.max_prompt_length + config.max_new_tokens
    ptx_set = PackedEncoded(
        encode_conversation(loaded.tokenizer, r["messages"], max_length, config.chat_template)
        for r in (load_split(inputs.sft_data, "train") if config.ptx_coef > 0 else [])
    )

    # --- engines and coefficients: AdamW per model; KL penalty and PPO-Penalty betas --------
    # AdamW's default decay (0.01) on every weight, as PPO's results were measured with.
    policy_engine, critic_engine = (
        build_engine(model, lr, ON_POLICY_WEIGHT_DECAY, config.max_grad_norm, config.distributed,
                     device, decay_matrices_only=False)
        for model, lr in ((loaded.policy, config.lr), (TokenValues(critic), config.critic_lr))
    )  # fmt: skip
    # Rollouts call the models themselves; the loss calls them through their engines.
    ppo_models = PPOModels(loaded.tokenizer, policy_engine.model, loaded.reference,
                           critic_engine.model)  # fmt: skip
    train_models = PPOModels(loaded.tokenizer, policy_engine.module, loaded.reference,
                             critic_engine.module)  # fmt: skip
    sampler = RolloutSampler(policy_engine, loaded.tokenizer, config, device)
    kl_ctl = make_kl_controller(
        config.kl_control, config.kl_coef, config.kl_target, config.kl_horizon
    )
    penalty = AdaptivePenaltyCoef(config.penalty_beta, config.penalty_target_kl)
    moments = RunningMoments()  # running mean/std of the RM scores (normalize_scores)

    # --- rollout: experience of one response per prompt (the loop runs it under no_grad) --
    def rollout(rows: list[int], iteration: int) -> Experience:
        messages = prompts.messages(rows)
        # Under ZeRO-3 the policy's weights are gathered whole for generation (one gather, not
        # one per token); the critic and the frozen models score sharded, a layer at a time.
        with policy_engine.gathered():
            exp, stats, texts = make_experience(ppo_models, sampler, rewards_source, messages,
                                                prompts.token_ids(rows), config,
                                                kl_ctl.value, moments)  # fmt: skip
        shown = [m[-1]["content"] for m in messages]
        return Experience(exp, len(rows), stats, (shown, texts, exp.scores.tolist()))

    # --- loss of one minibatch: policy + vf_coef x value (+ ptx_coef x LM loss on SFT) ------
    def loss(exp: PPOExperience, rows: torch.Tensor, gradient_step: int):
        losses, stats = ppo_loss(train_models, exp.select(rows), config, penalty.value)
        if not ptx_set:
            return losses, stats
        ptx = ptx_loss(train_models, ptx_set, config, gradient_step)
        losses["policy"] = losses["policy"] + config.ptx_coef * ptx
        total = losses["policy"] + losses["critic"]
        return losses, {"loss/ptx": ptx.item(), **stats, "loss/total": total.item()}

    # --- after each update: PPO-Penalty's beta, then the KL coefficient adapt -------------
    def after_update(stats: dict[str, float]) -> None:
        if config.policy_loss == "penalty":
            penalty.update(stats.get("policy/kl_old_new", 0.0))
            stats["policy/penalty_beta"] = penalty.value
        kl_ctl.update(stats["kl/mean"], config.rollout_batch_size)

    algorithm = OnPolicyAlgorithm(
        name="ppo",
        trained=[
            Trained("policy", policy_engine, config.lr),
            Trained("critic", critic_engine, config.critic_lr),
        ],
        prompts_per_iteration=config.rollout_batch_size,
        epochs=config.ppo_epochs,
        minibatch_size=config.minibatch_size,
        rollout=rollout,
        loss=loss,
        after_update=after_update,
        state={"kl_ctl": kl_ctl, "penalty": penalty, "moments": moments},
        release=sampler.close,
        sampling_clock=sampler.take_seconds,
    )
    history = train_on_policy(algorithm, config, len(prompts), device, tracker, started,
                              ckpt_root, fingerprint, latest)  # fmt: skip

    description = {
        "artifact": "ppo_policy",
        "sft_model": inputs.sft_model,
        "reward_model": inputs.reward_model,
        "data": inputs.prompts,
        "data_sha256": manifest_checksum(inputs.prompts),
    }
    metrics = {**result_metrics(history, started), "kl_coef": kl_ctl.value}
    return publish_policy(policy_engine, loaded.tokenizer, outputs.model, description, metrics,
                          history, config, ckpt_root, tracker)  # fmt: skip
