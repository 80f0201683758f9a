"""The DSSPN network: a dilated ResNet backbone and the semantic-neuron head."""
