module phiforge/ollamatemplate

go 1.22
