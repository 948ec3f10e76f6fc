"""Printers of the integer program: C for microcontrollers, Verilog for the P-LUT unit."""
