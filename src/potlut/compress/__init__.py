"""The .potlut model file: model graph, S-Huff weight coding, container, size bounds."""
