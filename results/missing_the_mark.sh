# Issue 21's studies, sourced by results/reproduce.sh (which defines lth, wanted, runs,
# results, data). The protocol and why: docs/guide/reproduction.md.
#
# (1) missing_the_mark_mnist: "Pruning Neural Networks at Initialization: Why Are We Missing
#     the Mark?" (Frankle et al. 2021) on LeNet-300-100 / MNIST. IMP (magnitude) and the
#     one-shot at-init criteria snip, grasp, synflow, magnitude_init, and random, each with
#     the layer_shuffle control; 18 levels (the last at 1.85% of the weights, the densities
#     of IMP at 20% per level, 10% for the output layer), 3 replicates, 10,000 iterations.
#     IMP also trains reinit (the unstructured side of study 2).
# (2) structured_mnist: neuron-granularity IMP tickets against their reinit control (Liu et
#     al. 2019, "Rethinking the Value of Network Pruning"), 14 levels (5.1% of the weights,
#     14 and 5 hidden neurons left), beside study 1's unstructured IMP.
# (3) structured_fashion_mnist: study 2 on Fashion-MNIST, beside the unstructured IMP run of
#     reproduce.sh's lenet_300_100_fashion_mnist study (the same preset and 10,000 iterations).

mark_iterations=10000 mark_levels=18 mark_replicates=3 structured_levels=14
mark_methods=(imp snip grasp synflow magnitude_init random)
# MARK_METHODS="imp" (or "snip grasp ..."): only these methods' runs, so that two copies of
# results/background.sh (each with its own LOGS folder) can run the study in two streams; the
# study's figure is drawn by whichever finishes the last method.
read -r -a mark_todo <<< "${MARK_METHODS:-${mark_methods[*]}}"

mark_run() {  # out, criterion, controls, levels, then more lth run options
  lth run --preset lenet_300_100_paper --iterations "${ITER:-$mark_iterations}" \
    --levels "${LEVELS:-$4}" --replicates "${REPLICATES:-$mark_replicates}" \
    --criterion "$2" --controls "$3" --test-every 1000 --threads "${THREADS:-1}" --quiet \
    --checkpoint-every 120 "${data[@]}" --out "$1" "${@:5}"
}

missing_the_mark_mnist() {
  wanted missing_the_mark_mnist || return 0
  local name=missing_the_mark_mnist m criterion controls
  for m in "${mark_todo[@]}"; do
    # the at-init criteria rank every layer together (pruning auto), not the preset's
    # layer-wise rates: the per-layer allocation is what those methods decide
    criterion="$m" controls=layer_shuffle pruning=auto
    [ "$m" = imp ] && criterion=magnitude controls=layer_shuffle,reinit pruning=layerwise
    mark_run "$runs/$name/$m" "$criterion" "$controls" "$mark_levels" --pruning "$pruning"
    lth publish "$runs/$name/$m" "$results/$name/$m"
  done
  for m in "${mark_methods[@]}"; do  # the figure once every method is published
    [ -f "$results/$name/$m/summary.csv" ] || return 0
  done
  # every method beside IMP, ± 1 std over the replicates
  lth plot "${mark_methods[@]/#/$runs/$name/}" --out "$results/$name" --band std \
    --labels "$(IFS=,; echo "${mark_methods[*]}")" \
    --title "LeNet-300-100 on MNIST: pruning at initialisation vs IMP"
}

structured_study() {  # name, dataset, its title, the unstructured IMP run to plot beside it
  wanted "$1" || return 0
  local name=$1 imp=$4
  mark_run "$runs/$name/neuron" magnitude reinit "$structured_levels" --granularity neuron \
    --dataset "$2"
  lth publish "$runs/$name/neuron" "$results/$name/neuron"
  if [ -f "$imp/summary.csv" ]; then  # beside unstructured IMP, when it has run
    lth plot "$runs/$name/neuron" "$imp" --out "$results/$name" --band std \
      --labels "neuron,weight" --title "LeNet-300-100 on $3: structured vs unstructured"
  else
    lth plot "$runs/$name/neuron" --out "$results/$name" --band std
  fi
}

structured_mnist() {
  structured_study structured_mnist mnist MNIST "$runs/missing_the_mark_mnist/imp"
}

structured_fashion_mnist() {
  structured_study structured_fashion_mnist fashion_mnist Fashion-MNIST \
    "$runs/lenet_300_100_fashion_mnist"
}
